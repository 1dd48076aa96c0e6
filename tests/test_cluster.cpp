// childproc::cluster: the primary's events, the scheduling modes under load, supervision
// (restart, backoff, give up, memory), rolling reload and graceful shutdown. The workers are the
// helper's cluster-worker mode (helpers/cluster_worker.hpp), an HTTP server answering its pid;
// the load is generated here on the same io_context, on 127.0.0.1 only.
//
// Every guarantee here is new with the cluster: before it, childproc had no cluster (these
// tests did not compile), so no "before the fix" output is quoted except where a part of the
// implementation was removed to see its test fail.
#include "common.hpp"

#include <childproc/cluster.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>

using namespace std::chrono_literals;
using tcp = asio::ip::tcp;
using childproc::cluster;
using childproc::cluster_worker;
using childproc::scheduling;

namespace {

const tcp::endpoint loopback_any{asio::ip::make_address("127.0.0.1"), 0};

childproc::cluster_options worker_options(scheduling mode, std::size_t workers) {
  return {.workers = workers,
          .program = test::helper,
          .args = std::vector<std::string>{"cluster-worker", "127.0.0.1", "0"},
          .scheduling = mode,
          .endpoint = loopback_any};
}

// HTTP load on keep-alive connections: `connections` clients send GET `path` one after the
// other until `limit` requests were answered (or stop() was called). A request that fails (a
// connection reset or closed before its answer) counts as an error and is sent again on a new
// connection.
struct load : std::enable_shared_from_this<load> {
  load(asio::io_context& io, tcp::endpoint ep, std::size_t limit, std::size_t connections)
      : io(io), ep(ep), limit(limit), connections(connections) {}
  asio::io_context& io;
  tcp::endpoint ep;
  std::size_t limit;
  std::size_t connections;
  std::string path = "/";
  bool close_each = false; // one connection per request ("Connection: close")
  std::size_t started = 0, answered = 0, errors = 0, finished = 0;
  bool stopped = false;
  std::map<pid_t, std::size_t> per_pid;
  std::function<void(std::size_t answered)> on_answer; // after each answer
  std::function<void()> on_done;                       // every connection ended

  void start() {
    for (std::size_t i = 0; i < connections; ++i)
      std::make_shared<client>(shared_from_this())->connect();
  }
  void stop() { stopped = true; }
  bool more() {
    if (stopped || started >= limit)
      return false;
    ++started;
    return true;
  }

  struct client : std::enable_shared_from_this<client> {
    explicit client(std::shared_ptr<load> l) : l(std::move(l)), socket(this->l->io) {}
    std::shared_ptr<load> l;
    tcp::socket socket;
    asio::streambuf in;
    std::string request;
    bool pending = false; // a request was taken from the budget and not answered yet

    void connect() {
      // A request that failed is sent again, unless the load was stopped meanwhile.
      if (l->stopped || (!pending && !(pending = l->more())))
        return end();
      socket = tcp::socket(l->io);
      socket.async_connect(l->ep, [self = shared_from_this()](boost::system::error_code ec) {
        if (ec)
          return self->failed();
        self->send();
      });
    }
    void send() {
      request = "GET " + l->path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                (l->close_each ? "Connection: close\r\n" : "") + "\r\n";
      asio::async_write(socket, asio::buffer(request),
                        [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                          if (ec)
                            return self->failed();
                          self->read_head();
                        });
    }
    void read_head() {
      asio::async_read_until(
          socket, in, "\r\n\r\n",
          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (ec)
              return self->failed();
            std::string head(asio::buffers_begin(self->in.data()),
                             asio::buffers_begin(self->in.data()) + n);
            self->in.consume(n);
            const auto at = head.find("Content-Length: ");
            const std::size_t length = std::stoul(head.substr(at + 16));
            const bool close = head.find("Connection: close") != std::string::npos;
            self->read_body(length, close);
          });
    }
    void read_body(std::size_t length, bool close) {
      const std::size_t have = in.size();
      asio::async_read(
          socket, in, asio::transfer_exactly(length > have ? length - have : 0),
          [self = shared_from_this(), length, close](boost::system::error_code ec, std::size_t) {
            if (ec)
              return self->failed();
            std::string body(asio::buffers_begin(self->in.data()),
                             asio::buffers_begin(self->in.data()) + length);
            self->in.consume(length);
            self->answered(std::stoi(body), close);
          });
    }
    void answered(pid_t pid, bool close) {
      pending = false;
      ++l->per_pid[pid];
      ++l->answered;
      if (l->on_answer)
        l->on_answer(l->answered);
      if (close)
        return connect();
      if (!(pending = l->more()))
        return end();
      send();
    }
    void failed() {
      ++l->errors;
      boost::system::error_code ignored;
      socket.close(ignored);
      // Try again after a moment (a restarted worker, a closed connection).
      auto timer = std::make_shared<asio::steady_timer>(l->io, 10ms);
      timer->async_wait([self = shared_from_this(), timer](auto) { self->connect(); });
    }
    void end() {
      boost::system::error_code ignored;
      socket.close(ignored);
      if (++l->finished == l->connections && l->on_done)
        l->on_done();
    }
  };
};

// This process's sockets on `port` with a peer: the connections it accepted there.
std::size_t accepted_on(unsigned short port) {
  std::size_t held = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    tcp::endpoint local, peer;
    socklen_t local_size = static_cast<socklen_t>(local.capacity());
    socklen_t peer_size = static_cast<socklen_t>(peer.capacity());
    if (::getsockname(fd, local.data(), &local_size) == 0 && local_size == sizeof(sockaddr_in) &&
        local.port() == port && ::getpeername(fd, peer.data(), &peer_size) == 0)
      ++held;
  }
  return held;
}

std::size_t resident_set(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
  unsigned long pages = 0, resident = 0;
  if (f && std::fscanf(f, "%lu %lu", &pages, &resident) != 2)
    resident = 0;
  if (f)
    std::fclose(f);
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

const char* mode_name(scheduling mode) {
  switch (mode) {
  case scheduling::shared:
    return "shared";
  case scheduling::reuse_port:
    return "reuse_port";
  case scheduling::round_robin:
    return "round_robin";
  }
  return "?";
}

std::string distribution(const std::map<pid_t, std::size_t>& per_pid) {
  std::string text;
  for (const auto& [pid, n] : per_pid)
    text += (text.empty() ? "" : ", ") + std::to_string(pid) + ": " + std::to_string(n);
  return text;
}

using test::run_until;

struct recorded {
  std::vector<std::string> events; // "fork 1", "online 1", "listening 1", "exit 1 0 -" ...
  std::map<unsigned, pid_t> pids;
  std::size_t listening = 0;
};

void record(cluster& c, recorded& r) {
  c.on_fork([&](const cluster_worker& w) {
    r.events.push_back("fork " + std::to_string(w.id()));
    r.pids[w.id()] = w.pid().value_or(0);
  });
  c.on_online(
      [&](const cluster_worker& w) { r.events.push_back("online " + std::to_string(w.id())); });
  c.on_listening([&](const cluster_worker& w, const tcp::endpoint& at) {
    ++r.listening;
    r.events.push_back("listening " + std::to_string(w.id()) + " " + std::to_string(at.port()));
  });
  c.on_disconnect(
      [&](const cluster_worker& w) { r.events.push_back("disconnect " + std::to_string(w.id())); });
  c.on_exit([&](const cluster_worker& w, std::optional<int> code, std::optional<int> signal) {
    r.events.push_back("exit " + std::to_string(w.id()) + " " +
                       (code ? std::to_string(*code) : "-") + " " +
                       (signal ? childproc::signal_name(*signal) : "-") +
                       (w.exited_after_disconnect() ? " after-disconnect" : ""));
  });
}

// Starts `c` with its events recorded in `r`, and runs `io` until `workers` listen.
void start_listening(asio::io_context& io, cluster& c, recorded& r, std::size_t workers) {
  record(c, r);
  c.start();
  REQUIRE(run_until(io, [&] { return r.listening == workers; }));
}

// A graceful shutdown, run to its end; no zombie is left.
void shut_down(asio::io_context& io, cluster& c) {
  bool closed = false;
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  REQUIRE(run_until(io, closed));
  CHECK(test::zombie_children() == 0);
}

bool has(const recorded& r, const std::string& event) {
  return std::find(r.events.begin(), r.events.end(), event) != r.events.end();
}

std::size_t count_prefix(const std::vector<std::string>& events, const std::string& prefix) {
  return static_cast<std::size_t>(std::count_if(
      events.begin(), events.end(), [&](const auto& e) { return e.rfind(prefix, 0) == 0; }));
}

// A round_robin cluster of two listening workers: the tests tell worker 1 something and check
// that worker 2 (`staying`) serves what follows.
struct two_round_robin_workers {
  asio::io_context io;
  cluster c{io, worker_options(scheduling::round_robin, 2)};
  recorded r;
  std::vector<cluster_worker> workers;
  pid_t staying = 0;

  two_round_robin_workers() {
    start_listening(io, c, r, 2);
    workers = c.workers();
    REQUIRE(workers.size() == 2);
    staying = workers[1].pid().value_or(0);
  }
};

// Runs a load of `n` requests, a connection each; true once every connection ended (20 s bound).
std::shared_ptr<load> serve_requests(asio::io_context& io, const cluster& c, std::size_t n,
                                     bool& done) {
  auto l = std::make_shared<load>(io, c.endpoint(), n, 1);
  l->close_each = true;
  l->on_done = [&done] { done = true; };
  l->start();
  done = run_until(io, done, 20s);
  return l;
}

} // namespace

TEST_CASE("a cluster forks its workers with ids 1..N and reports fork, online and listening on "
          "one port",
          "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 2));
  recorded r;
  record(c, r);
  c.start();
  const auto port = std::to_string(c.endpoint().port());
  REQUIRE(c.endpoint().port() != 0);
  bool ready = false;
  c.on_listening([&](const cluster_worker&, const tcp::endpoint&) { ready = r.listening == 2; });
  run_until(io, ready);
  REQUIRE(ready);
  for (unsigned id : {1u, 2u}) {
    const auto s = std::to_string(id);
    const auto fork = std::find(r.events.begin(), r.events.end(), "fork " + s);
    const auto online = std::find(r.events.begin(), r.events.end(), "online " + s);
    const auto listening =
        std::find(r.events.begin(), r.events.end(), "listening " + s + " " + port);
    REQUIRE(fork < online);
    REQUIRE(online < listening);
    REQUIRE(listening != r.events.end());
  }
  const auto workers = c.workers();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].id() == 1);
  CHECK(workers[1].id() == 2);
  CHECK(workers[0].slot() == 0);
  CHECK(workers[1].slot() == 1);
  CHECK(workers[0].is_listening());
  bool closed = false;
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  run_until(io, closed);
  REQUIRE(closed);
  CHECK(count_prefix(r.events, "exit ") == 2);
  CHECK(has(r, "exit 1 0 - after-disconnect"));
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a worker's user messages pass through and the cluster's own are not delivered",
          "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 1));
  std::vector<std::string> got;
  c.on_online([&](const cluster_worker& w) {
    w.send(boost::json::value{{"hello", 1}});
    w.send("text");
  });
  c.on_message([&](const cluster_worker& w, const childproc::message& m) {
    got.push_back(boost::json::serialize(m.json()));
    if (got.size() == 2)
      w.disconnect();
  });
  bool exited = false;
  bool after_disconnect = false;
  c.on_exit([&](const cluster_worker& w, std::optional<int> code, std::optional<int>) {
    exited = true;
    after_disconnect = w.exited_after_disconnect();
    CHECK(code == 0);
  });
  c.start();
  run_until(io, exited);
  REQUIRE(exited);
  CHECK(after_disconnect);
  CHECK(got == std::vector<std::string>{R"({"hello":1})", R"("text")"});
  CHECK(c.workers().empty()); // disconnected: not restarted
}

TEST_CASE("every scheduling mode serves 1000 requests from 32 connections with no error",
          "[cluster][load]") {
  const auto mode = GENERATE(scheduling::shared, scheduling::reuse_port, scheduling::round_robin);
  asio::io_context io;
  cluster c(io, worker_options(mode, 3));
  recorded r;
  start_listening(io, c, r, 3);

  auto l = std::make_shared<load>(io, c.endpoint(), 1000, 32);
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  run_until(io, done);
  REQUIRE(done);
  std::printf("cluster %s: 1000 requests over 32 connections, per worker pid: %s\n",
              mode_name(mode), distribution(l->per_pid).c_str());
  CHECK(l->errors == 0);
  CHECK(l->answered == 1000);
  std::set<pid_t> workers;
  for (const auto& [id, pid] : r.pids)
    workers.insert(pid);
  for (const auto& [pid, n] : l->per_pid)
    CHECK(workers.count(pid) == 1);

  shut_down(io, c);
}

TEST_CASE("a worker killed under load is restarted in its slot and the load keeps being served",
          "[cluster][load]") {
  const auto mode = GENERATE(scheduling::shared, scheduling::round_robin);
  asio::io_context io;
  auto options = worker_options(mode, 2);
  options.restart_backoff = 10ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 2);

  auto l = std::make_shared<load>(io, c.endpoint(), 2000, 8);
  bool done = false;
  pid_t victim = 0;
  l->on_answer = [&](std::size_t n) {
    if (n == 200) {
      // The one serving the most (under shared a burst may all go to one worker).
      victim = std::max_element(l->per_pid.begin(), l->per_pid.end(), [](auto& a, auto& b) {
                 return a.second < b.second;
               })->first;
      ::kill(victim, SIGKILL);
    }
  };
  l->on_done = [&] { done = true; };
  l->start();
  run_until(io, done);
  REQUIRE(done);
  // The load may end before the replacement listens.
  REQUIRE(run_until(io, [&] { return r.listening == 3; }));
  std::printf("cluster %s: worker %d killed after 200 answers; %zu errors retried; per pid: %s\n",
              mode_name(mode), victim, l->errors, distribution(l->per_pid).c_str());
  CHECK(l->answered == 2000);
  CHECK(l->errors <= 8); // at most the requests in flight on the killed worker's connections
  const unsigned killed = r.pids[1] == victim ? 1 : 2;
  CHECK(has(r, "exit " + std::to_string(killed) + " - SIGKILL"));
  CHECK(has(r, "fork 3"));
  const auto workers = c.workers();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].id() == 3 - killed);
  CHECK(workers[1].id() == 3);
  CHECK(workers[1].slot() == killed - 1); // the killed worker's slot
  CHECK(workers[1].is_listening());

  shut_down(io, c);
}

namespace {

// net.ipv4.tcp_migrate_req: 1 when the kernel moves the connections queued on a closing
// SO_REUSEPORT socket to another socket of its group instead of resetting them.
bool kernel_migrates_requests() {
  std::ifstream setting("/proc/sys/net/ipv4/tcp_migrate_req");
  int value = 0;
  return setting >> value && value == 1;
}

} // namespace

// Before the fix (reuse_port's stop() closing its socket at once, without the drain): "cluster
// reuse_port, a connection per request: ... 5 errors" (28 in another run): CHECK(errors == 0).
TEST_CASE("a rolling reload under continuous load drops zero requests", "[cluster][load]") {
  const auto mode = GENERATE(scheduling::shared, scheduling::reuse_port, scheduling::round_robin);
  const bool close_each = GENERATE(false, true);
  asio::io_context io;
  cluster c(io, worker_options(mode, 2));
  recorded r;
  start_listening(io, c, r, 2);

  auto l = std::make_shared<load>(io, c.endpoint(), 1000000, 32);
  l->close_each = close_each;
  bool done = false, reloaded = false;
  boost::system::error_code reload_ec;
  std::size_t answered_at_reload = 0;
  l->on_answer = [&](std::size_t n) {
    if (n == 300)
      c.async_reload([&](boost::system::error_code ec) {
        reload_ec = ec;
        reloaded = true;
        answered_at_reload = l->answered;
      });
    if (reloaded && n >= answered_at_reload + 300)
      l->stop();
  };
  l->on_done = [&] { done = true; };
  l->start();
  run_until(io, done);
  REQUIRE(done);
  std::printf("cluster %s, %s: rolling reload under load: %zu answered, %zu errors, per pid: %s\n",
              mode_name(mode), close_each ? "a connection per request" : "keep-alive", l->answered,
              l->errors, distribution(l->per_pid).c_str());
  CHECK(!reload_ec);
  if (mode == scheduling::reuse_port && !kernel_migrates_requests()) {
    // The documented limit of reuse_port (docs/cluster.md): a connection that reaches a stopping
    // worker's socket between its drain and its close is reset by the kernel, unless
    // net.ipv4.tcp_migrate_req is 1. Seen in CI: 1 in 782 connections per request, and 1 in 1633
    // under keep-alive (a client reconnecting after an old worker closed its connection at
    // disconnect). Only a handful may be lost.
    if (l->errors > 0)
      WARN(l->errors << " connection(s) reset while a reuse_port worker closed "
                        "(net.ipv4.tcp_migrate_req is 0)");
    CHECK(l->errors <= 3);
  } else {
    CHECK(l->errors == 0);
  }
  // The old workers left after the new ones listened, each having finished its connections.
  for (const char* old : {"exit 1 0 - after-disconnect", "exit 2 0 - after-disconnect"})
    CHECK(has(r, old));
  const auto listening3 = std::find_if(r.events.begin(), r.events.end(), [](const auto& e) {
    return e.rfind("listening 3 ", 0) == 0;
  });
  const auto disconnect1 = std::find(r.events.begin(), r.events.end(), "disconnect 1");
  CHECK(listening3 < disconnect1);
  const auto workers = c.workers();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].id() == 3);
  CHECK(workers[1].id() == 4);
  CHECK(l->per_pid.count(r.pids[3]) + l->per_pid.count(r.pids[4]) >= 1);

  shut_down(io, c);
}

TEST_CASE("a reload whose new worker does not listen within listen_timeout fails and keeps the "
          "old worker",
          "[cluster]") {
  const std::string flag = "/tmp/childproc-cluster-once-" + std::to_string(::getpid());
  std::remove(flag.c_str());
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.args = std::vector<std::string>{"cluster-worker-once", flag, "127.0.0.1", "0"};
  options.listen_timeout = 300ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  bool reloaded = false;
  boost::system::error_code reload_ec;
  c.async_reload([&](boost::system::error_code ec) {
    reload_ec = ec;
    reloaded = true;
  });
  run_until(io, reloaded);
  REQUIRE(reloaded);
  CHECK(reload_ec == childproc::errc::timed_out);
  CHECK(has(r, "exit 2 - SIGKILL after-disconnect"));
  // The old worker kept its slot and still serves.
  const auto workers = c.workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers[0].id() == 1);
  auto l = std::make_shared<load>(io, c.endpoint(), 10, 2);
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  run_until(io, done);
  CHECK(l->errors == 0);
  CHECK(l->per_pid.size() == 1);
  CHECK(l->per_pid.count(r.pids[1]) == 1);
  std::remove(flag.c_str());
  shut_down(io, c);
}

TEST_CASE("a worker killed or disconnected through the cluster is not restarted", "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 2);
  options.restart_backoff = 0ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 2);
  auto workers = c.workers();
  CHECK(workers[0].kill());
  workers[1].disconnect();
  bool both = false;
  c.on_exit(
      [&](const cluster_worker&, auto, auto) { both = count_prefix(r.events, "exit ") == 2; });
  run_until(io, both);
  REQUIRE(both);
  io.run_for(200ms); // a restart would fork now
  // kill() closes the channel, then signals (Node's order): a worker that sees the disconnect
  // first may exit 0 before SIGTERM lands. Either way it is not restarted.
  CHECK((has(r, "exit 1 - SIGTERM after-disconnect") || has(r, "exit 1 0 - after-disconnect")));
  CHECK(has(r, "exit 2 0 - after-disconnect"));
  CHECK(count_prefix(r.events, "fork ") == 2);
  CHECK(c.workers().empty());
  CHECK(workers[0].is_dead());
  CHECK(!workers[0].kill()); // already ended
}

TEST_CASE("destroying a cluster without a shutdown kills its workers", "[cluster]") {
  asio::io_context io;
  std::vector<pid_t> pids;
  {
    cluster c(io, worker_options(scheduling::reuse_port, 2));
    std::size_t listening = 0;
    bool up = false;
    c.on_listening([&](const cluster_worker& w, const tcp::endpoint&) {
      pids.push_back(*w.pid());
      up = ++listening == 2;
    });
    c.start();
    run_until(io, up);
    REQUIRE(up);
  }
  io.restart();
  io.run_for(200ms);
  for (pid_t pid : pids)
    CHECK(test::wait_reaped(pid));
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a crash loop backs off and gives up after max_restarts with the give_up event",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(GENERATE(scheduling::shared, scheduling::round_robin), 1);
  options.args = std::vector<std::string>{"cluster-worker-crash"};
  options.max_restarts = 3;
  options.restart_backoff = 20ms;
  cluster c(io, options);
  recorded r;
  record(c, r);
  std::vector<std::chrono::steady_clock::time_point> forks;
  c.on_fork([&](const cluster_worker&) { forks.push_back(std::chrono::steady_clock::now()); });
  bool gave_up = false;
  std::size_t restarts = 0;
  unsigned last = 0;
  c.on_give_up([&](const cluster_worker& w, std::size_t n) {
    gave_up = true;
    restarts = n;
    last = w.id();
  });
  c.start();
  run_until(io, gave_up);
  REQUIRE(gave_up);
  io.run_for(200ms); // nothing more may come
  CHECK(restarts == 3);
  CHECK(last == 4);
  CHECK(forks.size() == 4);
  CHECK(count_prefix(r.events, "exit ") == 4);
  CHECK(has(r, "exit 4 1 -"));
  // The backoff: 20 ms, then 30, then 45 (timers never fire early).
  REQUIRE(forks.size() == 4);
  CHECK(forks[1] - forks[0] >= 20ms);
  CHECK(forks[2] - forks[1] >= 30ms);
  CHECK(forks[3] - forks[2] >= 45ms);
  CHECK(c.workers().empty());
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("exits after min_uptime are not unstable: the slot keeps restarting", "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.args = std::vector<std::string>{"cluster-worker-crash"};
  options.max_restarts = 1;
  options.min_uptime = 0ms; // every run is long enough
  options.restart_backoff = 5ms;
  cluster c(io, options);
  recorded r;
  record(c, r);
  bool gave_up = false;
  c.on_give_up([&](const cluster_worker&, std::size_t) { gave_up = true; });
  c.start();
  REQUIRE(run_until(io, [&] { return count_prefix(r.events, "exit ") >= 5; }));
  CHECK(!gave_up);
  shut_down(io, c);
  CHECK(!gave_up);
}

TEST_CASE("a graceful shutdown under load answers the requests in flight, then the workers exit",
          "[cluster][load]") {
  asio::io_context io;
  const auto mode = GENERATE(scheduling::shared, scheduling::round_robin);
  cluster c(io, worker_options(mode, 2));
  recorded r;
  start_listening(io, c, r, 2);

  auto l = std::make_shared<load>(io, c.endpoint(), 1000000, 16);
  bool done = false, closed = false;
  boost::system::error_code close_ec;
  l->on_answer = [&](std::size_t n) {
    if (n == 200) {
      l->stop(); // no new requests; those in flight must be answered
      c.async_shutdown([&](boost::system::error_code ec) {
        close_ec = ec;
        closed = true;
      });
    }
  };
  l->on_done = [&] { done = true; };
  l->start();
  run_until(io, closed);
  run_until(io, done);
  REQUIRE(closed);
  REQUIRE(done);
  CHECK(!close_ec);
  CHECK(l->errors == 0);
  CHECK(l->answered == l->started);
  CHECK(has(r, "exit 1 0 - after-disconnect"));
  CHECK(has(r, "exit 2 0 - after-disconnect"));
  CHECK(c.workers().empty());
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a worker that does not finish within kill_timeout after a shutdown gets SIGKILL",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.kill_timeout = 300ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  auto l = std::make_shared<load>(io, c.endpoint(), 1, 1);
  l->path = "/block/5000";
  l->start();
  bool closed = false;
  asio::steady_timer t(io, 200ms); // the request is in the worker by then
  t.async_wait([&](auto) { c.async_shutdown([&](boost::system::error_code) { closed = true; }); });
  const auto began = std::chrono::steady_clock::now();
  run_until(io, closed);
  REQUIRE(closed);
  CHECK(std::chrono::steady_clock::now() - began < 4s); // well before the 5 s block ends
  CHECK(has(r, "exit 1 - SIGKILL after-disconnect"));
  l->stop();
  io.run_for(100ms);
  CHECK(test::zombie_children() == 0);
}

TEST_CASE("a worker above max_memory_restart is replaced: the new one listens before the old one "
          "is disconnected",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(GENERATE(scheduling::shared, scheduling::round_robin), 1);
  options.memory_check_interval = 100ms;
  auto probe = worker_options(scheduling::shared, 1);
  // Measure an idle worker first, so that the limit holds under sanitizers too.
  std::size_t idle_rss = 0;
  {
    cluster measure(io, probe);
    bool up = false;
    measure.on_listening([&](const cluster_worker& w, const tcp::endpoint&) {
      idle_rss = resident_set(*w.pid());
      up = true;
    });
    measure.start();
    REQUIRE(run_until(io, up));
    shut_down(io, measure);
  }
  REQUIRE(idle_rss > 0);
  options.max_memory_restart = idle_rss + (32u << 20);
  cluster limited(io, options);
  recorded r;
  start_listening(io, limited, r, 1);
  auto l = std::make_shared<load>(io, limited.endpoint(), 1, 1);
  l->path = "/leak/64";
  l->start();
  bool replaced = false;
  limited.on_exit([&](const cluster_worker& w, auto, auto) { replaced = w.id() == 1; });
  run_until(io, replaced);
  REQUIRE(replaced);
  const auto listening2 = std::find_if(r.events.begin(), r.events.end(), [](const auto& e) {
    return e.rfind("listening 2 ", 0) == 0;
  });
  const auto disconnect1 = std::find(r.events.begin(), r.events.end(), "disconnect 1");
  CHECK(listening2 < disconnect1);
  CHECK(has(r, "exit 1 0 - after-disconnect"));
  shut_down(io, limited);
}

TEST_CASE("outside a cluster listen is a plain listener and there is no worker channel",
          "[cluster]") {
  CHECK(cluster::is_primary());
  CHECK(cluster::worker_id() == 0);
  asio::io_context io;
  auto listener = cluster::listen(io, loopback_any);
  CHECK(listener.is_open());
  CHECK(listener.local_endpoint().port() != 0);
  listener.close();
  CHECK(!listener.is_open());
  CHECK_THROWS_AS(cluster::channel(io), std::system_error);
}

// ---- hardening (the review of the merged cluster) ----

namespace {

// A flag file for the helper's cluster-worker-once modes, absent at first and removed at the end.
struct flag_file {
  std::string path = "/tmp/childproc-cluster-flag-" + std::to_string(::getpid());
  flag_file() { std::remove(path.c_str()); }
  ~flag_file() { std::remove(path.c_str()); }
};

childproc::cluster_options once_options(const std::string& mode, const flag_file& flag) {
  auto options = worker_options(scheduling::shared, 1);
  options.args = std::vector<std::string>{mode, flag.path, "127.0.0.1", "0"};
  return options;
}

// Runs `io` until `done()` or the bound, counting the exceptions that escape io.run_for().
template <class Predicate>
bool run_until_counting(asio::io_context& io, Predicate done, std::size_t& thrown,
                        std::chrono::seconds bound = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  io.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    try {
      io.run_for(50ms);
    } catch (const std::runtime_error&) {
      ++thrown;
    }
  }
  return done();
}

// Reloads `c` and runs `io` until the reload completes; returns its error.
boost::system::error_code reload_and_wait(asio::io_context& io, cluster& c) {
  bool reloaded = false;
  boost::system::error_code reload_ec;
  c.async_reload([&](boost::system::error_code ec) {
    reload_ec = ec;
    reloaded = true;
  });
  REQUIRE(run_until(io, reloaded));
  return reload_ec;
}

} // namespace

// Before the fix: "CHECK( io.stopped() ) with expansion: false" after 20 s: the new worker's
// watcher held itself and the reload's completion (its work guard).
TEST_CASE("destroying a cluster during a reload lets io.run() return and aborts the reload",
          "[cluster]") {
  flag_file flag;
  asio::io_context io;
  auto options = once_options("cluster-worker-once", flag);
  options.listen_timeout = 60s;
  std::optional<cluster> c(std::in_place, io, options);
  recorded r;
  start_listening(io, *c, r, 1);
  bool reloaded = false;
  boost::system::error_code reload_ec;
  c->async_reload([&](boost::system::error_code ec) {
    reload_ec = ec;
    reloaded = true;
  });
  REQUIRE(run_until(io, [&] { return has(r, "fork 2"); }));
  c.reset();
  io.restart();
  io.run_for(20s); // returns at once when out of work
  CHECK(io.stopped());
  CHECK(reloaded);
  CHECK(reload_ec == asio::error::operation_aborted);
  for (const auto& [id, pid] : r.pids)
    CHECK(test::wait_reaped(pid));
  CHECK(test::zombie_children() == 0);
}

// Before the fix: SIGSEGV in finish_shutdown_if_done (a null scheduler).
TEST_CASE("a shutdown before start() completes with no worker and the cluster cannot start",
          "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 1));
  shut_down(io, c);
  std::error_code ec;
  c.start(ec);
  CHECK(ec == childproc::errc::invalid_argument);
  CHECK(c.workers().empty());
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "REQUIRE( run_until(...) ) due to unexpected exception with message: spawn
// .../childproc_test_helper EBADF: Bad file descriptor" (the second start() closed the socket).
TEST_CASE("a second start() is an error and leaves the running cluster as it was", "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.restart_backoff = 10ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  const auto endpoint = c.endpoint();
  std::error_code ec;
  c.start(ec);
  CHECK(ec == childproc::errc::invalid_argument);
  CHECK_THROWS_AS(c.start(), std::system_error);
  CHECK(c.endpoint() == endpoint);
  ::kill(r.pids[1], SIGKILL);
  REQUIRE(run_until(
      io, [&] { return r.listening == 2; }, 30s));
  auto l = std::make_shared<load>(io, c.endpoint(), 20, 2);
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  REQUIRE(run_until(io, done));
  CHECK(l->errors == 0);
  CHECK(l->per_pid.count(r.pids[2]) == 1);
  shut_down(io, c);
}

// Before the fix: "CHECK_NOTHROW( c.start(ec) ) due to unexpected exception with message: spawn
// .../childproc_test_helper ENOENT (chdir) : No such file or directory", then "CHECK( ec )".
TEST_CASE("start(ec) sets ec for a worker launch that throws, and leaves no worker", "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 2);
  options.worker_options.cwd = "/nonexistent-childproc-cwd";
  cluster c(io, options);
  std::error_code ec;
  CHECK_NOTHROW(c.start(ec));
  CHECK(ec);
  CHECK(c.workers().empty());
  cluster thrower(io, options);
  CHECK_THROWS_AS(thrower.start(), std::system_error);
  io.run_for(200ms);
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "FAILED: due to unexpected exception with message: spawn ... ENOENT (chdir) :
// No such file or directory" out of io.run(), from replace() in the first reload.
TEST_CASE("a fork that fails in a reload or a restart is an error code or an event, and the "
          "cluster goes on",
          "[cluster]") {
  char dir_template[] = "/tmp/childproc-cluster-cwd-XXXXXX";
  REQUIRE(::mkdtemp(dir_template));
  const std::string dir = dir_template;
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.worker_options.cwd = dir;
  options.max_restarts = 2;
  options.restart_backoff = 10ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  REQUIRE(::rmdir(dir.c_str()) == 0); // every later launch fails
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto reload_ec = reload_and_wait(io, c);
    CHECK(reload_ec); // the launch's error, not invalid_argument (a reload stuck under way)
    CHECK(reload_ec != childproc::errc::invalid_argument);
    REQUIRE(c.workers().size() == 1);
    CHECK(c.workers().front().id() == 1);
  }
  bool gave_up = false;
  c.on_give_up([&](const cluster_worker&, std::size_t) { gave_up = true; });
  ::kill(r.pids[1], SIGKILL);
  REQUIRE(run_until(io, gave_up, 30s));
  CHECK(c.workers().empty());
  shut_down(io, c);
}

// Before the fix: "FAILED: due to a fatal error condition: SIGSEGV": the deferred reload used
// the moved-from handle (a null state).
TEST_CASE("deferred async operations use the cluster's state, not the handle they came from",
          "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 1));
  recorded r;
  start_listening(io, c, r, 1);
  auto reload = c.async_reload(asio::deferred);
  auto shutdown = c.async_shutdown(asio::deferred);
  cluster moved(std::move(c));
  bool reloaded = false, closed = false;
  std::move(reload)([&](boost::system::error_code ec) {
    CHECK(!ec);
    reloaded = true;
  });
  REQUIRE(run_until(io, reloaded));
  std::move(shutdown)([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  REQUIRE(run_until(io, closed));

  auto listener = cluster::listen(io, loopback_any);
  auto accept = listener.async_accept(asio::deferred);
  childproc::cluster_listener listener_moved(std::move(listener));
  bool accepted = false;
  std::move(accept)([&](boost::system::error_code ec, tcp::socket) { accepted = !ec; });
  tcp::socket client(io);
  client.async_connect(listener_moved.local_endpoint(), [](boost::system::error_code) {});
  REQUIRE(run_until(io, accepted, 10s));
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "REQUIRE( run_until(io, [&] { return r.listening == 2; }, 15s) )" failed: the
// slot had no worker after the old one crashed and the new one timed out.
TEST_CASE("a slot is never left without a worker: the old one crashing during a failed reload",
          "[cluster]") {
  flag_file flag;
  asio::io_context io;
  auto options = once_options("cluster-worker-once", flag);
  options.listen_timeout = 2s;
  options.restart_backoff = 10ms;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  c.on_fork([&](const cluster_worker& w) {
    if (w.id() == 2)
      ::kill(r.pids[1], SIGKILL); // the old worker crashes while the new one starts
  });
  c.on_exit([&](const cluster_worker& w, auto, auto) {
    if (w.id() == 2)
      std::remove(flag.path.c_str()); // the next start serves
  });
  CHECK(reload_and_wait(io, c) == childproc::errc::timed_out);
  REQUIRE(run_until(
      io, [&] { return r.listening == 2; }, 15s));
  const auto workers = c.workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers[0].id() == 3);
  CHECK(workers[0].is_listening());
  shut_down(io, c);
}

// Before the fix: "REQUIRE( run_until_counting(io, [&] { return closed; }, thrown) )" failed:
// the throwing exit handler skipped the shutdown's completion.
TEST_CASE("an exit handler that throws does not lose the shutdown", "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 1));
  recorded r;
  start_listening(io, c, r, 1);
  c.on_exit([](const cluster_worker&, auto, auto) { throw std::runtime_error("exit handler"); });
  bool closed = false;
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  std::size_t thrown = 0;
  REQUIRE(run_until_counting(
      io, [&] { return closed; }, thrown));
  CHECK(thrown == 1);
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "CHECK( r.events[0] == "fork 1" ) with expansion: "exit 1 -2 -" == "fork 1"":
// the failed launch's exit came first.
TEST_CASE("a worker whose launch fails reports fork before exit, as Node orders them",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.program = "/nonexistent/childproc-cluster-worker";
  options.autorestart = false;
  cluster c(io, options);
  recorded r;
  record(c, r);
  c.start();
  REQUIRE(run_until(
      io, [&] { return count_prefix(r.events, "exit ") == 1; }, 10s));
  REQUIRE(r.events.size() == 2);
  CHECK(r.events[0] == "fork 1");
  CHECK(r.events[1].rfind("exit 1 ", 0) == 0);
  CHECK(c.workers().empty());
}

// Before the fix: "CHECK( reload_and_wait(io, c) == errc::worker_start_failed ) with expansion:
// system:0 == childproc:16", "CHECK( !gave_up )": the slot was given up, the third reload skipped
// it.
TEST_CASE("failed reloads do not count as crashes of a slot that serves", "[cluster]") {
  flag_file flag;
  asio::io_context io;
  auto options = once_options("cluster-worker-once-crash", flag);
  options.max_restarts = 1;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  bool gave_up = false;
  c.on_give_up([&](const cluster_worker&, std::size_t) { gave_up = true; });
  for (int attempt = 0; attempt < 3; ++attempt)
    CHECK(reload_and_wait(io, c) == childproc::errc::worker_start_failed);
  io.run_for(300ms); // a restart of the slot (if one was scheduled) would have come
  CHECK(!gave_up);
  std::remove(flag.path.c_str()); // the next start serves
  CHECK(!reload_and_wait(io, c));
  const auto workers = c.workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers[0].id() == 5);
  CHECK(!gave_up);
  shut_down(io, c);
}

// Before the fix: "REQUIRE( run_until(io, closed, 30s) )" failed: the assignment dropped the
// shutdown's completion (and the kill timers) with the old state.
TEST_CASE("assigning over a cluster that is shutting down lets the shutdown complete",
          "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::shared, 1));
  recorded r;
  start_listening(io, c, r, 1);
  bool closed = false;
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  c = cluster(io, worker_options(scheduling::shared, 1));
  REQUIRE(run_until(io, closed, 30s));
  CHECK(has(r, "exit 1 0 - after-disconnect"));
  CHECK(test::wait_reaped(r.pids[1]));
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "REQUIRE( run_until(io, closed, 15s) )" failed: the worker had exited, but
// its `close` waited for the grandchild holding its stdout and stderr pipes.
TEST_CASE("a worker has ended at its exit, even while a grandchild holds its stdio pipes",
          "[cluster]") {
  const std::string pid_file = "/tmp/childproc-cluster-grandchild-" + std::to_string(::getpid());
  std::remove(pid_file.c_str());
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  // The grandchild keeps the worker's stdout and stderr (pipes: silent), not its channel (fd 4)
  // or the listening socket (fd 3).
  options.program = "/bin/sh";
  options.args = std::vector<std::string>{"-c",
                                          "sleep 30 </dev/null 3>&- 4>&- & echo $! > " + pid_file +
                                              "; exec \"$0\" cluster-worker 127.0.0.1 0",
                                          test::helper};
  options.worker_options.silent = true;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  bool closed = false;
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  const bool shut = run_until(io, closed, 15s);
  pid_t grandchild = 0;
  if (std::FILE* f = std::fopen(pid_file.c_str(), "r")) {
    if (std::fscanf(f, "%d", &grandchild) != 1)
      grandchild = 0;
    std::fclose(f);
  }
  if (grandchild > 0)
    ::kill(grandchild, SIGKILL);
  std::remove(pid_file.c_str());
  REQUIRE(grandchild > 0);
  REQUIRE(shut);
  CHECK(has(r, "exit 1 0 - after-disconnect"));
  CHECK(test::zombie_children() == 0);
}

namespace {

// The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp), 0 when none.
unsigned long listening_inode(unsigned short port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line); // the header
  char wanted[16];
  std::snprintf(wanted, sizeof wanted, "0100007F:%04X", port);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
    unsigned long inode = 0;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> inode;
    if (local == wanted && state == "0A") // TCP_LISTEN
      return inode;
  }
  return 0;
}

// How many of `pid`'s descriptors are the socket `inode`.
std::size_t descriptors_of(pid_t pid, unsigned long inode) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  const std::string target = "socket:[" + std::to_string(inode) + "]";
  std::size_t count = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64];
    const auto n = ::readlink((dir + "/" + std::to_string(fd)).c_str(), link, sizeof link);
    if (n > 0 && std::string(link, static_cast<std::size_t>(n)) == target)
      ++count;
  }
  return count;
}

} // namespace

// Before the fix: "descriptors_of(pid, inode) == 0" never held: the disconnected worker kept the
// listening socket it had inherited (1 descriptor), only its own copy was closed.
TEST_CASE("a disconnected worker in shared mode holds no descriptor of the listening socket",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.kill_timeout = 30s; // the keep-alive connection below keeps the worker up
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  const auto inode = listening_inode(c.endpoint().port());
  REQUIRE(inode != 0);
  const pid_t pid = r.pids[1];
  CHECK(descriptors_of(pid, inode) >= 1);
  // One answered request on a keep-alive connection that stays open.
  tcp::socket client(io);
  client.connect(c.endpoint());
  const std::string request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  asio::write(client, asio::buffer(request));
  asio::streambuf answer;
  asio::read_until(client, answer, "\r\n\r\n");
  c.workers().front().disconnect();
  const bool closed_all = run_until(
      io, [&] { return descriptors_of(pid, inode) == 0; }, 15s);
  CHECK(test::alive(pid)); // still draining its connection
  CHECK(closed_all);
  client.close();
  shut_down(io, c);
}

// ---- session 6: start(ec)'s validation, a reload cut by a shutdown, the error event ----

// Before the fix: "CHECK_NOTHROW( c.start(ec) ) due to unexpected exception with message: spawn
// .../childproc_test_helper: the stdio table has no stdio::ipc slot".
TEST_CASE("start(ec) reports worker options without ipc as an error code and stays startable",
          "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.worker_options.stdio = {childproc::stdio::pipe, childproc::stdio::pipe,
                                  childproc::stdio::pipe}; // "silent" spelt without ipc
  cluster c(io, options);
  recorded r;
  record(c, r);
  std::error_code ec;
  CHECK_NOTHROW(c.start(ec));
  CHECK(ec == childproc::errc::ipc_required);
  // Not started: the same error again (a started cluster would say invalid_argument).
  c.start(ec);
  CHECK(ec == childproc::errc::ipc_required);
  CHECK_THROWS_AS(c.start(), std::system_error);
  io.run_for(200ms);
  CHECK(r.events.empty());
  CHECK(c.workers().empty());
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "CHECK( ec == childproc::errc::invalid_argument ) with expansion: system:0 ==
// childproc:1": the worker was forked with the handed-over pipe, its restart would not have it.
// Before the fix (the pipe's closing): run_until(io, closed, 10s) failed: the refusal kept the
// handed-over pipe open, and `yes` blocked on it for ever.
TEST_CASE("a cluster refuses stdio::from in its worker options, which it forks again at every "
          "restart",
          "[cluster]") {
  asio::io_context io;
  // `yes` writes until its pipe is closed: it ends by SIGPIPE only if the refusal closed it.
  auto writer = childproc::spawn(io, "yes", {}, {});
  auto options = worker_options(scheduling::shared, 1);
  options.worker_options.stdio = {childproc::stdio::from(writer.out()), childproc::stdio::inherit,
                                  childproc::stdio::inherit, childproc::stdio::ipc};
  cluster c(io, options);
  recorded r;
  record(c, r);
  std::error_code ec;
  CHECK_NOTHROW(c.start(ec));
  CHECK(ec == childproc::errc::invalid_argument);
  try {
    c.start();
    FAIL("start() did not throw");
  } catch (const std::system_error& e) {
    CHECK(std::string(e.what()).find("stdio::from") != std::string::npos);
  }
  bool closed = false;
  std::optional<int> writer_signal;
  writer.on_close([&](auto, std::optional<int> s) {
    closed = true;
    writer_signal = s;
  });
  REQUIRE(run_until(io, closed, 10s));
  CHECK(writer_signal == SIGPIPE); // the refused pipe was closed
  CHECK(r.events.empty());
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "CHECK( reload_ec == asio::error::operation_aborted ) with expansion:
// childproc:3 == system:125": the shutdown's disconnect of the new worker read as its timeout.
TEST_CASE("a reload interrupted by a shutdown completes with operation_aborted", "[cluster]") {
  flag_file flag;
  asio::io_context io;
  auto options = once_options("cluster-worker-once", flag);
  options.listen_timeout = 60s;
  cluster c(io, options);
  recorded r;
  start_listening(io, c, r, 1);
  bool reloaded = false, closed = false;
  boost::system::error_code reload_ec;
  c.async_reload([&](boost::system::error_code ec) {
    reload_ec = ec;
    reloaded = true;
  });
  REQUIRE(run_until(io, [&] { return has(r, "online 2"); }));
  c.async_shutdown([&](boost::system::error_code ec) {
    CHECK(!ec);
    closed = true;
  });
  REQUIRE(run_until(
      io, [&] { return reloaded && closed; }, 30s));
  CHECK(reload_ec == asio::error::operation_aborted);
  CHECK(test::zombie_children() == 0);
}

namespace {
// RLIMIT_NOFILE lowered to `limit` for the guard's life.
struct descriptor_limit {
  explicit descriptor_limit(rlim_t limit) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    rlimit lowered = saved;
    lowered.rlim_cur = limit;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  }
  ~descriptor_limit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
  rlimit saved{};
};
} // namespace

// Before the fix: "CHECK_NOTHROW( c.start(ec) ) due to unexpected exception with message:
// childproc: this child has no IPC channel (use fork)": a launch whose channel could not be made
// (no descriptor left) threw out of start(ec). (The other half, no event for the workers a
// failed start had launched, has no failing run: no limit was found where one launch fits and
// the next does not.)
TEST_CASE("a start(ec) whose launches run out of descriptors sets ec and reports no event",
          "[cluster]") {
#if defined(__SANITIZE_ADDRESS__)
  // The asan preset has UBSan too, whose vptr check needs a pipe of its own: with every fd
  // taken it reports Catch2's valid objects as having an invalid vptr (seen in CI's rehearsal).
  WARN("skipped: the sanitizer runtime needs fds of its own, and this scenario leaves none");
  return;
#endif
  // RLIMIT_NOFILE bounds descriptor numbers, and a launch takes the holes below the highest
  // one open first: raise the limit one by one from 3 until the start succeeds.
  for (std::size_t limit = 3; limit < 1024; ++limit) {
    asio::io_context io;
    auto options = worker_options(scheduling::shared, 3);
    options.autorestart = false;
    cluster c(io, options);
    recorded r;
    record(c, r);
    std::error_code ec;
    std::size_t launched = 0; // killed, not reaped yet
    {
      descriptor_limit lowered(limit);
      CHECK_NOTHROW(c.start(ec));
      launched = proc::children_of(::getpid()).size();
    }
    if (!ec) { // every launch fitted (the workers inherited the low limit: no need to serve)
      shut_down(io, c);
      break;
    }
    io.run_for(launched ? 300ms : 10ms);
    INFO("descriptors allowed: " << limit << ", error " << ec.message());
    CHECK(r.events.empty());
    CHECK(c.workers().empty());
  }
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "REQUIRE( run_until(...) )" failed: no error event (the launch's ENOENT was
// only the exit code -2).
TEST_CASE("a worker whose launch fails reports the error event with its error code", "[cluster]") {
  asio::io_context io;
  auto options = worker_options(scheduling::shared, 1);
  options.program = "/nonexistent/childproc-cluster-worker";
  options.autorestart = false;
  cluster c(io, options);
  recorded r;
  record(c, r);
  std::error_code error;
  c.on_error([&](const cluster_worker& w, std::error_code ec) {
    r.events.push_back("error " + std::to_string(w.id()));
    error = ec;
  });
  c.start();
  REQUIRE(run_until(
      io, [&] { return count_prefix(r.events, "exit ") == 1; }, 10s));
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[0] == "fork 1");
  CHECK(r.events[1] == "error 1");
  CHECK(r.events[2].rfind("exit 1 ", 0) == 0);
  CHECK(error == std::errc::no_such_file_or_directory);
}

// round_robin hands each connection to the next free worker: with a connection per request,
// every worker serves its share.
TEST_CASE("round_robin spreads connections within 20% of even over its workers",
          "[cluster][load]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::round_robin, 3));
  recorded r;
  start_listening(io, c, r, 3);
  // One client: each worker acknowledges its connection long before its turn comes again, so the
  // free list turns in order. (With more clients the share follows how fast each worker
  // acknowledges, as in Node: 82 to 262 of 600 over 8 clients on a loaded machine.)
  auto l = std::make_shared<load>(io, c.endpoint(), 600, 1);
  l->close_each = true;
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  REQUIRE(run_until(io, done));
  std::printf("cluster round_robin: 600 connections, per worker pid: %s\n",
              distribution(l->per_pid).c_str());
  CHECK(l->errors == 0);
  REQUIRE(l->per_pid.size() == 3);
  for (const auto& [pid, n] : l->per_pid) {
    CHECK(n >= 160); // 200 ± 20%
    CHECK(n <= 240);
  }
  shut_down(io, c);
}

// Before the fix: "l->errors == 0" failed: the primary's on_disconnect left the worker on
// round_robin's free list, and every other connection was handed to a channel that was gone
// (closed unanswered) until the worker exited.
TEST_CASE_METHOD(two_round_robin_workers,
                 "round_robin hands no connection to a worker that disconnected its own channel",
                 "[cluster][load]") {
  workers[0].send(boost::json::value{{"disconnect-self", 20000}});
  REQUIRE(run_until(io, [&] { return has(r, "disconnect 1"); }));
  bool done = false;
  auto l = serve_requests(io, c, 40, done);
  REQUIRE(done);
  CHECK(l->errors == 0);
  CHECK(l->per_pid.size() == 1);
  CHECK(l->per_pid[staying] == 40);
  // The destructor kills both (worker 1 would hold on for 20 s).
}

// Before the fix (TSan): a data race on the listener's state between take() (the channel's
// handler, on one thread) and accept() (the worker's accept loop, on another); the worker halted
// on the report, and its connections failed.
TEST_CASE("a round_robin worker may run its io_context on several threads", "[cluster][load]") {
  asio::io_context io;
  auto options = worker_options(scheduling::round_robin, 2);
  options.args = std::vector<std::string>{"cluster-worker-threads", "4", "127.0.0.1", "0"};
  cluster c(io, std::move(options));
  recorded r;
  start_listening(io, c, r, 2);
  auto l = std::make_shared<load>(io, c.endpoint(), 2000, 16);
  l->close_each = true; // a connection per request: a handover each
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  REQUIRE(run_until(io, done));
  CHECK(l->errors == 0);
  CHECK(l->answered == 2000);
  CHECK(count_prefix(r.events, "exit") == 0);
  shut_down(io, c);
}

// Before the fix: "l->errors == 0" failed: a worker whose listener was closed stayed on the
// free list, and every connection handed to it was closed unanswered.
TEST_CASE_METHOD(
    two_round_robin_workers,
    "round_robin passes a connection a worker's closed listeners do not take to another "
    "worker",
    "[cluster][load]") {
  bool closed = false;
  c.on_message([&](const cluster_worker&, const childproc::message&) { closed = true; });
  // Under load: a connection in flight to worker 1 crosses its "close" and is answered
  // not-taken, then served by worker 2.
  auto l = std::make_shared<load>(io, c.endpoint(), 300, 8);
  l->close_each = true;
  l->on_answer = [&](std::size_t answered) {
    if (answered == 50)
      workers[0].send(boost::json::value{{"close-listener", true}});
  };
  bool done = false;
  l->on_done = [&] { done = true; };
  l->start();
  REQUIRE(run_until(io, done));
  CHECK(closed);
  CHECK(l->errors == 0);
  CHECK(l->answered == 300);
  CHECK(l->per_pid[staying] >= 250);
  // Worker 1 is still up, connected, and gets nothing after its close: a second load all goes
  // to worker 2.
  bool after_done = false;
  auto after = serve_requests(io, c, 40, after_done);
  REQUIRE(after_done);
  CHECK(after->errors == 0);
  CHECK(after->per_pid.size() == 1);
  CHECK(after->per_pid[staying] == 40);
  CHECK(count_prefix(r.events, "exit") == 0);
}

// Before the fix: the primary's accepted connection was on fd 0 while stdin was closed (Asio's
// accept() takes the lowest free number, without close-on-exec), where a worker forked then
// would have taken it for its stdin.
TEST_CASE("round_robin's primary keeps the connections it holds off descriptors 0-2", "[cluster]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::round_robin, 1));
  recorded r;
  start_listening(io, c, r, 1);
  // The one worker blocks on its first connection: the next ones stay in the primary.
  tcp::socket blocker(io);
  blocker.connect(c.endpoint());
  asio::write(blocker, asio::buffer(std::string("GET /block/3000 HTTP/1.1\r\nHost: x\r\n\r\n")));
  const pid_t worker = c.workers().at(0).pid().value_or(0);
  REQUIRE(run_until(
      io,
      [&] { // asleep in its handler
        std::ifstream wchan("/proc/" + std::to_string(worker) + "/wchan");
        std::string where;
        wchan >> where;
        return where.find("nanosleep") != std::string::npos;
      },
      10s));
  std::vector<tcp::socket> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back(io);
    clients.back().open(tcp::v4()); // before fd 0 is closed: the clients do not take it
  }
  const int saved = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
  REQUIRE(saved >= 3);
  ::close(0);
  for (auto& client : clients)
    client.async_connect(c.endpoint(), [](boost::system::error_code) {});
  run_until(
      io, [] { return false; }, 1s); // the primary accepts them meanwhile
  tcp::endpoint on_zero;
  socklen_t size = static_cast<socklen_t>(on_zero.capacity());
  const bool zero_is_socket = ::getsockname(0, on_zero.data(), &size) == 0;
  const bool zero_inheritable = ::fcntl(0, F_GETFD) == 0;
  const std::size_t held = accepted_on(c.endpoint().port()); // else the test saw nothing
  ::dup2(saved, 0);
  ::close(saved);

  CHECK_FALSE(
      (zero_is_socket && size == sizeof(sockaddr_in) && on_zero.port() == c.endpoint().port()));
  CHECK_FALSE((zero_is_socket && zero_inheritable));
  CHECK(held >= 1);
}

namespace {
// Sends `control` to worker `w` and runs `io` until the worker sent it back.
void tell_and_wait(asio::io_context& io, cluster& c, const cluster_worker& w,
                   boost::json::value control) {
  auto echoed = std::make_shared<bool>(false); // the handler stays with the cluster
  c.on_message([echoed](const cluster_worker&, const childproc::message&) { *echoed = true; });
  w.send(std::move(control));
  REQUIRE(run_until(io, [&] { return *echoed; }));
}
} // namespace

// Before the fix: "REQUIRE( done )" failed: "close" was posted and "listening" sent at once, so
// the primary heard them the other way round and never handed the worker another connection.
TEST_CASE("a round_robin worker that closes its listener and listens again gets connections",
          "[cluster][load]") {
  asio::io_context io;
  cluster c(io, worker_options(scheduling::round_robin, 1));
  recorded r;
  start_listening(io, c, r, 1);
  tell_and_wait(io, c, c.workers().at(0), boost::json::value{{"relisten", true}});
  bool done = false;
  auto l = serve_requests(io, c, 20, done);
  REQUIRE(done);
  CHECK(l->errors == 0);
  CHECK(l->answered == 20);
}

// Before the fix: "REQUIRE( done )" failed: the worker refused each connection (no listener)
// and the primary handed it back to the same worker, for ever.
TEST_CASE_METHOD(
    two_round_robin_workers,
    "round_robin passes connections on from a worker whose listener was dropped without "
    "close()",
    "[cluster][load]") {
  tell_and_wait(io, c, workers.at(0), boost::json::value{{"drop-listener", true}});
  bool done = false;
  auto l = serve_requests(io, c, 40, done);
  REQUIRE(done);
  CHECK(l->errors == 0);
  CHECK(l->per_pid.size() == 1);
  CHECK(l->per_pid[staying] == 40);
}

// Before the fix: "held <= 8" failed (18 <= 8): every connection was accepted into the primary's
// queue while no worker listened; a crash loop could run the primary out of descriptors to fork
// with.
TEST_CASE("round_robin's primary holds at most backlog connections while no worker listens",
          "[cluster]") {
  flag_file flag;
  { std::ofstream(flag.path) << "x"; } // the worker starts as a later one: it never listens
  asio::io_context io;
  auto options = once_options("cluster-worker-once", flag);
  options.scheduling = scheduling::round_robin;
  options.backlog = 8;
  cluster c(io, options);
  bool online = false;
  c.on_online([&](const cluster_worker&) { online = true; });
  c.start();
  REQUIRE(run_until(io, online));
  std::vector<tcp::socket> clients;
  for (int i = 0; i < 40; ++i) {
    clients.emplace_back(io);
    clients.back().async_connect(c.endpoint(), [](boost::system::error_code) {});
  }
  run_until(
      io, [] { return false; }, 2s); // two rounds of SYNs: the kernel's own backlog drops some
  const std::size_t held = accepted_on(c.endpoint().port());
  CHECK(held <= 8);
  CHECK(held > 0);
}
