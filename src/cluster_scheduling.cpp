// The cluster's scheduling modes shared, reuse_port and round_robin, both sides (see
// cluster_scheduling.hpp).
#include "cluster_scheduling.hpp"

#include "posix/unique_fd.hpp"

#include <childproc/error.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace childproc::detail {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using posix::unique_fd;

std::error_code last_error() {
  return {errno, std::system_category()};
}

// A TCP socket bound to `ep` (>= 3, close-on-exec), with SO_REUSEADDR and, when asked,
// SO_REUSEPORT; listening when backlog > 0.
unique_fd bound_socket(const tcp::endpoint& ep, bool reuse_port, int backlog, std::error_code& ec) {
  unique_fd fd(posix::above_stdio(
      ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP)));
  const int on = 1;
  if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) ||
      ::bind(fd.get(), ep.data(), static_cast<socklen_t>(ep.size())) < 0 ||
      (backlog > 0 && ::listen(fd.get(), backlog) < 0)) {
    ec = last_error();
    return {};
  }
  return fd;
}

tcp::endpoint local_endpoint_of(int fd, std::error_code& ec) {
  tcp::endpoint ep;
  socklen_t size = static_cast<socklen_t>(ep.capacity());
  if (::getsockname(fd, ep.data(), &size) < 0)
    ec = last_error();
  else
    ep.resize(size);
  return ep;
}

// shared: the primary's listening socket, given to every worker in one more stdio slot.
class shared_scheduler final : public primary_scheduler {
public:
  tcp::endpoint open(const tcp::endpoint& requested, int backlog, std::error_code& ec) override {
    socket_ = bound_socket(requested, false, backlog, ec);
    return ec ? tcp::endpoint{} : local_endpoint_of(socket_.get(), ec);
  }
  void prepare(fork_options& options) override {
    options.env_overrides[cluster_env::listen_fd] = std::to_string(options.stdio.size());
    options.stdio.push_back(stdio::fd(socket_.get()));
  }
  void close() noexcept override { socket_.reset(); }

private:
  unique_fd socket_;
};

// reuse_port: the primary binds (without listening) to hold the port, so that port 0 means one
// port for every worker; each worker binds and listens itself.
class reuse_port_scheduler final : public primary_scheduler {
public:
  tcp::endpoint open(const tcp::endpoint& requested, int, std::error_code& ec) override {
    holder_ = bound_socket(requested, true, 0, ec);
    return ec ? tcp::endpoint{} : local_endpoint_of(holder_.get(), ec);
  }
  void prepare(fork_options&) override {}
  void close() noexcept override { holder_.reset(); }

private:
  unique_fd holder_;
};

// round_robin: the primary accepts and hands each connection to a free worker over its channel
// (a copy of the descriptor with {"cc":"conn"}). A worker is free again once it answered the
// last one ({"cc":"accepted","taken":bool}): one connection in flight per worker, as Node's
// RoundRobinHandle. The primary keeps its own descriptor until then, so that a connection no
// listener of the worker took (all closed) goes to the next free worker. The connections
// accepted while no worker is free wait in the primary, in arrival order.
class round_robin_scheduler final : public primary_scheduler {
  struct core : std::enable_shared_from_this<core> {
    explicit core(const asio::any_io_executor& ex) : acceptor(ex), retry(ex) {}
    tcp::acceptor acceptor;
    asio::steady_timer retry; // after an accept error that is not the connection's own
    std::deque<tcp::socket> queued;
    std::map<unsigned, childproc::channel> all; // the listening workers, by id
    std::deque<unsigned> free;                  // those with no connection in flight
    std::map<unsigned, tcp::socket> in_flight;  // handed over, not answered yet
    tcp protocol = tcp::v4();                   // of the endpoint
    std::size_t limit = 511; // queued here at most (the backlog); then the kernel's queue
    bool accepting = false;  // a wait, or its retry, is pending

    // Accepts while fewer than `limit` wait here: with no worker listening (a crash loop, a
    // backoff) the kernel's backlog holds the rest, and the primary keeps descriptors to fork.
    void maybe_accept() {
      if (!accepting && acceptor.is_open() && queued.size() < limit)
        accept_next();
    }
    void accept_next() {
      accepting = true;
      acceptor.async_wait(
          tcp::acceptor::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
            self->accepting = false;
            if (ec == asio::error::operation_aborted || !self->acceptor.is_open())
              return;
            if (!ec)
              ec = self->accept_ready();
            if (!ec)
              return self->maybe_accept();
            // EMFILE and the like: wait a moment rather than spin.
            self->accepting = true;
            self->retry.expires_after(std::chrono::milliseconds(50));
            self->retry.async_wait([self](boost::system::error_code) {
              self->accepting = false;
              self->maybe_accept(); // not after close(): the acceptor is closed then
            });
          });
    }
    // accept(2): the new connection's own pending network errors are retried, as EAGAIN is.
    static bool transient(int error) {
      switch (error) {
      case ECONNABORTED:
      case EINTR:
      case EPROTO:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
      case EPERM: // a firewall refused this one
        return true;
      default:
        return false;
      }
    }
    // Accepts what is pending: close-on-exec (a launch elsewhere in the process must not
    // inherit it) and above the stdio numbers (a worker's stdio would take fd 0-2 for its own).
    // At most 64 a wake-up, so that a flood does not hold the loop.
    boost::system::error_code accept_ready() {
      for (int n = 0; n < 64 && queued.size() < limit; ++n) {
        const int fd = posix::above_stdio(
            ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd < 0 && transient(errno))
          continue;
        if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
          return {};
        if (fd < 0)
          return {errno, boost::system::system_category()};
        boost::system::error_code ec;
        tcp::socket socket(acceptor.get_executor());
        socket.assign(protocol, fd, ec);
        if (ec) {
          ::close(fd);
          continue;
        }
        queued.push_back(std::move(socket));
        distribute();
      }
      return {};
    }
    void distribute() {
      while (!queued.empty() && !free.empty()) {
        const unsigned id = free.front();
        free.pop_front();
        handoff(id);
      }
    }
    // Node's handoff(): the next queued connection to worker `id`, or `id` joins the free list.
    void handoff(unsigned id) {
      const auto worker = all.find(id);
      if (worker == all.end() || in_flight.count(id))
        return; // gone or not listening; or one in flight still (it listened again)
      if (!worker->second.connected())
        return stop_handing(id); // its disconnect is on the way: lose no connection to it
      if (queued.empty()) {
        if (std::find(free.begin(), free.end(), id) == free.end())
          free.push_back(id);
        return;
      }
      auto socket = std::move(queued.front());
      queued.pop_front();
      maybe_accept();
      // The channel owns the copy it sends (closed once sent, or if the worker is gone).
      std::error_code ec;
      auto copy = owned_fd::duplicate(socket.native_handle(), ec);
      if (ec) // no descriptor to spare: the only one goes, lost if no listener takes it
        return void(
            worker->second.send(control_message("conn"), owned_fd::from(std::move(socket))));
      in_flight.insert_or_assign(id, std::move(socket));
      worker->second.send(control_message("conn"), std::move(copy));
    }
    // The worker's answer for its connection in flight: taken (the primary's copy closes), or
    // not: none of its listeners is open (closed, or dropped without close()), so it leaves the
    // free list until it listens again, and the connection goes to the next free worker.
    void answered(unsigned id, bool taken) {
      if (const auto it = in_flight.find(id); it != in_flight.end()) {
        if (!taken)
          queued.push_front(std::move(it->second));
        in_flight.erase(it);
      }
      if (!taken)
        stop_handing(id);
      distribute(); // first: a refused connection goes to another worker
      handoff(id);
    }
    // The worker takes no more connections. One in flight to it is still answered (the answer
    // follows on the channel), so in_flight keeps it.
    void stop_handing(unsigned id) {
      all.erase(id);
      free.erase(std::remove(free.begin(), free.end(), id), free.end());
    }
  };

public:
  explicit round_robin_scheduler(const asio::any_io_executor& ex)
      : core_(std::make_shared<core>(ex)) {}
  tcp::endpoint open(const tcp::endpoint& requested, int backlog, std::error_code& ec) override {
    auto fd = bound_socket(requested, false, backlog, ec);
    boost::system::error_code bec;
    core_->protocol = requested.protocol();
    core_->limit = static_cast<std::size_t>(std::max(backlog, 1));
    if (!ec)
      core_->acceptor.assign(requested.protocol(), fd.get(), bec);
    if (!ec && !bec)
      fd.release();
    if (!ec && !bec)
      core_->acceptor.non_blocking(true, bec);
    if (bec)
      ec = bec;
    if (ec)
      return {};
    const auto at = local_endpoint_of(core_->acceptor.native_handle(), ec);
    if (!ec)
      core_->maybe_accept();
    return at;
  }
  void prepare(fork_options&) override {}
  void worker_listening(unsigned id, const childproc::channel& ch) override {
    if (core_->all.emplace(id, ch).second)
      core_->handoff(id);
  }
  void worker_control(unsigned id, const boost::json::object& o) override {
    const auto* kind = o.at("cc").if_string();
    if (*kind == "accepted") {
      const auto* taken = o.if_contains("taken");
      // An answer without "taken" (an older worker) took it.
      core_->answered(id, !taken || !taken->is_bool() || taken->get_bool());
    } else if (*kind == "close") {
      core_->stop_handing(id);
    }
  }
  // Whether it took the connection in flight is unknown: the primary's copy closes (the
  // worker's, if it has one, keeps the connection open).
  void worker_gone(unsigned id) override {
    core_->stop_handing(id);
    core_->in_flight.erase(id);
  }
  void close() noexcept override {
    boost::system::error_code ignored;
    core_->acceptor.close(ignored);
    core_->retry.cancel();
    core_->queued.clear();
    core_->all.clear();
    core_->free.clear();
    core_->in_flight.clear();
  }

private:
  std::shared_ptr<core> core_;
};

// A round_robin worker's listener: the connections the primary handed over, in order. After
// stop() it still hands out those that had arrived, then fails with operation_aborted.
// take() runs in the channel's handler and accept() in the user's accept loop: with io.run() on
// several threads they meet, so the state is under a mutex, and completions (which post) run
// after unlocking.
class handed_listener final : public cluster_listener_state,
                              public std::enable_shared_from_this<handed_listener> {
  using accept_completion = completion<boost::system::error_code, tcp::socket>;

public:
  handed_listener(const asio::any_io_executor& ex, const tcp::endpoint& ep)
      : executor_(ex), endpoint_(ep) {}

  void accept(std::unique_ptr<accept_completion> done) override {
    std::unique_lock lock(mutex_);
    if (!ready_.empty()) {
      auto socket = std::move(ready_.front());
      ready_.pop_front();
      lock.unlock();
      return done->complete({}, std::move(socket));
    }
    boost::system::error_code refused;
    if (closed_ || stopped_)
      refused = asio::error::operation_aborted;
    else if (waiting_) // one accept at a time, as an acceptor's accept loop makes them
      refused = asio::error::already_started;
    if (refused) {
      lock.unlock();
      return done->complete(refused, tcp::socket(executor_));
    }
    // Assigned before waiting_ is published (under the lock): a take() on another thread
    // completes it, which clears the slot. Posted: completing must not happen inside the
    // slot's own handler.
    const unsigned serial = ++serial_; // every accept's own, slot or not
    if (auto slot = done->cancellation_slot(); slot.is_connected())
      slot.assign([weak = weak_from_this(), serial](asio::cancellation_type) {
        if (auto self = weak.lock())
          asio::post(self->executor_, [weak, serial] {
            if (auto self = weak.lock())
              self->fail_waiting(serial);
          });
      });
    waiting_ = std::move(done);
  }
  bool take(owned_fd& fd) override {
    std::unique_lock lock(mutex_);
    if (closed_ || stopped_)
      return false;
    std::error_code ec;
    auto socket = adopt<tcp::socket>(executor_, std::move(fd), ec);
    if (ec)
      return true; // taken, and closed: not a connection this process can hold
    auto done = std::move(waiting_);
    if (!done) {
      ready_.push_back(std::move(socket));
      return true;
    }
    lock.unlock();
    done->complete({}, std::move(socket));
    return true;
  }
  tcp::endpoint local_endpoint() const override { return endpoint_; }
  bool is_open() const noexcept override {
    std::lock_guard lock(mutex_);
    return !closed_ && !stopped_;
  }
  void close() noexcept override {
    std::unique_lock lock(mutex_);
    const bool was_open = !closed_ && !stopped_;
    closed_ = true;
    auto dropped = std::move(ready_); // closed after unlocking
    auto done = std::move(waiting_);
    auto closed = was_open ? std::move(on_close_) : std::function<void()>{}; // once: never reopens
    lock.unlock();
    if (done)
      done->complete(asio::error::operation_aborted, tcp::socket(executor_));
    if (closed)
      try {
        closed();
      } catch (...) { // noexcept: the primary then learns it from the next refusal
      }
  }
  void on_close(std::function<void()> f) override {
    std::lock_guard lock(mutex_);
    on_close_ = std::move(f);
  }
  void stop() noexcept override {
    std::unique_lock lock(mutex_);
    stopped_ = true;
    auto done = ready_.empty() ? std::move(waiting_) : nullptr;
    lock.unlock();
    if (done)
      done->complete(asio::error::operation_aborted, tcp::socket(executor_));
  }
  asio::any_io_executor executor() const override { return executor_; }

private:
  // A cancellation of the accept numbered `serial`: a late one must not fail the next.
  void fail_waiting(unsigned serial) {
    std::unique_lock lock(mutex_);
    if (serial_ != serial || !waiting_)
      return;
    auto done = std::move(waiting_);
    lock.unlock();
    done->complete(asio::error::operation_aborted, tcp::socket(executor_));
  }

  const asio::any_io_executor executor_;
  const tcp::endpoint endpoint_;
  mutable std::mutex mutex_; // guards what follows
  std::deque<tcp::socket> ready_;
  std::unique_ptr<accept_completion> waiting_;
  unsigned serial_ = 0; // of the accept waiting
  std::function<void()> on_close_;
  bool stopped_ = false;
  bool closed_ = false;
};

// A worker's listener over an acceptor: the shared socket (its own copy of the descriptor), or
// its own SO_REUSEPORT socket, which it drains on stop(): the connections already queued on it
// would be reset by the close.
class acceptor_listener final : public cluster_listener_state,
                                public std::enable_shared_from_this<acceptor_listener> {
public:
  acceptor_listener(const asio::any_io_executor& ex, bool drain_on_stop)
      : executor_(ex), acceptor_(ex), drain_on_stop_(drain_on_stop) {}

  void assign(const tcp::endpoint& ep, unique_fd fd, std::error_code& ec) {
    boost::system::error_code bec;
    acceptor_.assign(ep.protocol(), fd.get(), bec);
    if (bec)
      ec = bec;
    else
      fd.release();
  }

  void accept(std::unique_ptr<completion<boost::system::error_code, tcp::socket>> done) override {
    if (closed_)
      return done->complete(asio::error::operation_aborted, tcp::socket(acceptor_.get_executor()));
    if (draining_)
      return drain_one(std::move(done));
    auto slot = done->cancellation_slot();
    auto& acceptor = acceptor_;
    acceptor.async_accept(asio::bind_cancellation_slot(
        slot, [self = shared_from_this(), done = std::move(done)](boost::system::error_code ec,
                                                                  tcp::socket socket) mutable {
          // A stop() while this accept was pending: take what is queued instead.
          if (ec == asio::error::operation_aborted && self->draining_ && !self->closed_)
            return self->drain_one(std::move(done));
          done->complete(ec, std::move(socket));
        }));
  }
  tcp::endpoint local_endpoint() const override {
    boost::system::error_code ec;
    return acceptor_.local_endpoint(ec);
  }
  bool is_open() const noexcept override { return !closed_ && !draining_; }
  void close() noexcept override {
    closed_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }
  void stop() noexcept override {
    if (!drain_on_stop_ || closed_)
      return close();
    draining_ = true;
    boost::system::error_code ignored;
    acceptor_.cancel(ignored);
  }
  asio::any_io_executor executor() const override { return executor_; }

private:
  // One non-blocking accept of what is queued; the listener closes once nothing is.
  void drain_one(std::unique_ptr<completion<boost::system::error_code, tcp::socket>> done) {
    boost::system::error_code ec;
    acceptor_.non_blocking(true, ec);
    tcp::socket socket(acceptor_.get_executor());
    if (!ec)
      acceptor_.accept(socket, ec);
    if (ec) {
      close();
      return done->complete(asio::error::operation_aborted, std::move(socket));
    }
    done->complete({}, std::move(socket));
  }

  asio::any_io_executor executor_;
  tcp::acceptor acceptor_;
  bool drain_on_stop_;
  bool draining_ = false;
  bool closed_ = false;
};

// Whether a worker's `ep` names the cluster's endpoint: the same address, and the configured
// port or the one chosen for it.
bool names_cluster_endpoint(const tcp::endpoint& ep, const worker_environment& env) {
  return env.endpoint && env.requested && ep.address() == env.requested->address() &&
         (ep.port() == env.requested->port() || ep.port() == env.endpoint->port());
}

} // namespace

std::string format_endpoint(const tcp::endpoint& ep) {
  return ep.address().to_string() + " " + std::to_string(ep.port());
}

std::optional<tcp::endpoint> parse_endpoint(const char* text) {
  if (!text)
    return std::nullopt;
  std::istringstream in(text);
  std::string address;
  unsigned port = 0;
  if (!(in >> address >> port) || port > 65535)
    return std::nullopt;
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address, ec);
  if (ec)
    return std::nullopt;
  return tcp::endpoint(ip, static_cast<unsigned short>(port));
}

const char* scheduling_name(scheduling mode) noexcept {
  switch (mode) {
  case scheduling::reuse_port:
    return "reuse_port";
  case scheduling::round_robin:
    return "round_robin";
  case scheduling::shared:
    break;
  }
  return "shared";
}

message control_message(const char* kind) {
  return message(boost::json::value(boost::json::object{{"cc", kind}}));
}

namespace {
worker_environment read_worker_env() noexcept {
  worker_environment env;
  const char* id = std::getenv(cluster_env::worker);
  if (!id || !*id)
    return env;
  env.is_worker = true;
  env.id = static_cast<unsigned>(std::strtoul(id, nullptr, 10));
  if (const char* slot = std::getenv(cluster_env::instance))
    env.slot = std::strtoul(slot, nullptr, 10);
  if (const char* mode = std::getenv(cluster_env::scheduling)) {
    if (std::strcmp(mode, "shared") == 0)
      env.mode = scheduling::shared;
    else if (std::strcmp(mode, "reuse_port") == 0)
      env.mode = scheduling::reuse_port;
    else if (std::strcmp(mode, "round_robin") == 0)
      env.mode = scheduling::round_robin;
  }
  env.endpoint = parse_endpoint(std::getenv(cluster_env::endpoint));
  env.requested = parse_endpoint(std::getenv(cluster_env::requested));
  if (const char* backlog = std::getenv(cluster_env::backlog); backlog && std::atoi(backlog) > 0)
    env.backlog = std::atoi(backlog);
  if (const char* fd = std::getenv(cluster_env::listen_fd)) {
    env.listen_fd = std::atoi(fd);
    // Inherited without close-on-exec: this process's own children must not get it.
    if (env.listen_fd < 3 || ::fcntl(env.listen_fd, F_SETFD, FD_CLOEXEC) < 0)
      env.listen_fd = -1;
  }
  for (const char* name :
       {cluster_env::worker, cluster_env::instance, cluster_env::scheduling, cluster_env::endpoint,
        cluster_env::requested, cluster_env::backlog, cluster_env::listen_fd})
    ::unsetenv(name);
  return env;
}
} // namespace

const worker_environment& worker_env() noexcept {
  static const worker_environment env = read_worker_env();
  return env;
}

std::unique_ptr<primary_scheduler> make_primary_scheduler(scheduling mode,
                                                          const asio::any_io_executor& ex) {
  switch (mode) {
  case scheduling::round_robin:
    return std::make_unique<round_robin_scheduler>(ex);
  case scheduling::shared:
    return std::make_unique<shared_scheduler>();
  case scheduling::reuse_port:
    return std::make_unique<reuse_port_scheduler>();
  }
  return nullptr;
}

std::shared_ptr<cluster_listener_state> open_listener(const asio::any_io_executor& ex,
                                                      const worker_environment& env,
                                                      const tcp::endpoint& ep,
                                                      std::error_code& ec) {
  if (env.is_worker && (!env.mode || !names_cluster_endpoint(ep, env))) {
    ec = make_error_code(errc::invalid_argument);
    return nullptr;
  }
  if (env.is_worker && env.mode == scheduling::round_robin)
    return std::make_shared<handed_listener>(ex, *env.endpoint);
  const bool own_socket = !env.is_worker || env.mode == scheduling::reuse_port;
  auto listener = std::make_shared<acceptor_listener>(ex, env.is_worker && own_socket);
  unique_fd fd;
  tcp::endpoint bind_to = ep;
  if (env.is_worker)
    bind_to = *env.endpoint;
  if (own_socket) {
    fd = bound_socket(bind_to, env.is_worker, env.backlog, ec);
  } else {
    if (env.listen_fd < 0) {
      ec = make_error_code(errc::invalid_argument);
      return nullptr;
    }
    fd.reset(::fcntl(env.listen_fd, F_DUPFD_CLOEXEC, 3));
    if (!fd)
      ec = last_error();
  }
  if (!ec)
    listener->assign(bind_to, std::move(fd), ec);
  if (ec)
    return nullptr;
  return listener;
}

std::shared_ptr<cluster_listener_state> closed_listener(const asio::any_io_executor& ex) {
  auto listener = std::make_shared<acceptor_listener>(ex, false);
  listener->close();
  return listener;
}

} // namespace childproc::detail
