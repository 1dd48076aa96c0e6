// The primary of a cluster: forks the workers, routes their messages and events, and
// supervises them (restart with backoff, memory limit, rolling reload, shutdown).
#include "cluster_scheduling.hpp"
#include "fork_stdio.hpp"
#include "handed_over.hpp"
#include "posix/resident.hpp"

#include <childproc/detail/handler_list.hpp>
#include <childproc/error.hpp>
#include <childproc/fork.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <thread>
#include <unistd.h>

namespace childproc {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace detail {

struct cluster_state;

struct cluster_worker_state {
  cluster_worker_state(const asio::any_io_executor& ex, unsigned id, std::size_t slot)
      : id(id), slot(slot), kill_timer(ex) {}
  unsigned id;
  std::size_t slot;
  child_process child;
  std::optional<pid_t> pid;
  clock_type::time_point started = clock_type::now();
  bool connected = false;
  bool listening = false;
  bool dead = false;
  bool after_disconnect = false;
  bool listen_timed_out = false; // a replacement killed for not listening within listen_timeout
  // No event: fork() threw (the worker never existed), or the start(ec) that launched it failed.
  bool unreported = false;
  asio::steady_timer kill_timer; // SIGKILL after kill_timeout, once disconnected
  // A replacement waiting on this worker (reload, memory): called after the bookkeeping of its
  // `listening` (true) or of its exit (false).
  std::function<void(bool listening)> watcher;
  std::weak_ptr<cluster_state> owner;
};

struct cluster_slot {
  explicit cluster_slot(const asio::any_io_executor& ex) : restart_timer(ex) {}
  std::shared_ptr<cluster_worker_state> current;
  std::size_t unstable = 0; // exits before min_uptime in a row
  std::size_t crashes = 0;  // restarts since the backoff was reset
  bool replacing = false;
  bool given_up = false;
  asio::steady_timer restart_timer;
};

using done_handler = std::unique_ptr<completion<boost::system::error_code>>;

struct cluster_state : std::enable_shared_from_this<cluster_state> {
  cluster_state(const asio::any_io_executor& ex, cluster_options opt)
      : ex(ex), opt(std::move(opt)), memory_timer(ex) {}

  asio::any_io_executor ex;
  cluster_options opt;
  std::string program;
  std::vector<std::string> args;
  fork_options launch; // opt.worker_options with fork()'s stdio table settled, at start()
  std::unique_ptr<primary_scheduler> scheduler;
  tcp::endpoint endpoint;
  std::vector<std::unique_ptr<cluster_slot>> slots;
  std::map<unsigned, std::shared_ptr<cluster_worker_state>> live;
  unsigned next_id = 1;
  bool started = false;
  bool stopping = false;
  bool reloading = false;
  done_handler shutdown_done;
  done_handler reload_done;
  std::shared_ptr<cluster_state> keep_alive; // while a shutdown outlives the handle
  asio::steady_timer memory_timer;

  handler_list<cluster::worker_handler> on_fork, on_online, on_disconnect;
  handler_list<std::function<void(const cluster_worker&, const tcp::endpoint&)>> on_listening;
  handler_list<std::function<void(const cluster_worker&, const message&)>> on_message;
  handler_list<std::function<void(const cluster_worker&, std::optional<int>, std::optional<int>)>>
      on_exit;
  handler_list<std::function<void(const cluster_worker&, std::size_t)>> on_give_up;
  handler_list<std::function<void(const cluster_worker&, std::error_code)>> on_error;

  std::shared_ptr<cluster_worker_state> fork_worker(std::size_t slot, std::error_code& ec);
  void attach(const std::shared_ptr<cluster_worker_state>& w);
  void control_message(const std::shared_ptr<cluster_worker_state>& w,
                       const boost::json::object& o);
  void worker_ended(const std::shared_ptr<cluster_worker_state>& w, std::optional<int> code,
                    std::optional<int> signal);
  void restart_later(std::size_t slot, const std::shared_ptr<cluster_worker_state>& last,
                     bool counts = true);
  bool give_up_if_unstable(std::size_t slot, const std::shared_ptr<cluster_worker_state>& last);
  void disconnect(const std::shared_ptr<cluster_worker_state>& w);
  void replace(std::size_t slot, std::function<void(std::error_code)> then);
  void reload_from(std::size_t slot);
  void finish_reload(boost::system::error_code ec);
  void check_memory();
  void watch_memory();
  void finish_shutdown_if_done();
  void destroy() noexcept;
  const char* start(std::error_code& ec);
  const char* settle_launch(std::error_code& ec);
};

namespace {

// This process's arguments after argv[0] (/proc/self/cmdline), Node's process.argv.slice(2).
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');)
    args.push_back(arg);
  if (!args.empty())
    args.erase(args.begin());
  return args;
}

std::chrono::milliseconds backoff(const cluster_options& o, std::size_t crashes) {
  const double delay = static_cast<double>(o.restart_backoff.count()) *
                       std::pow(1.5, static_cast<double>(std::min<std::size_t>(crashes, 64)));
  return std::min(o.restart_backoff_max,
                  std::chrono::milliseconds(static_cast<std::int64_t>(
                      std::min(delay, static_cast<double>(o.restart_backoff_max.count())))));
}

} // namespace

// Launches a worker for `slot`. A launch that throws (a cwd that cannot be entered, no fds) sets
// `ec` and returns a worker that never ran (no pid), registered nowhere: the callers run in
// timers and reloads, where an exception would escape io.run().
std::shared_ptr<cluster_worker_state> cluster_state::fork_worker(std::size_t slot,
                                                                 std::error_code& ec) {
  auto w = std::make_shared<cluster_worker_state>(ex, next_id++, slot);
  w->owner = weak_from_this();
  fork_options fo = launch; // settled: a scheduler's slot may follow the table
  fo.env_overrides[cluster_env::worker] = std::to_string(w->id);
  fo.env_overrides[cluster_env::instance] = std::to_string(slot);
  fo.env_overrides[cluster_env::scheduling] = scheduling_name(opt.scheduling);
  fo.env_overrides[cluster_env::endpoint] = format_endpoint(endpoint);
  fo.env_overrides[cluster_env::requested] = format_endpoint(opt.endpoint);
  fo.env_overrides[cluster_env::backlog] = std::to_string(opt.backlog);
  // `fork` is posted before fork() runs, so that it comes before the events of a launch that
  // fails (error, close), which fork() posts: Node's order (fork, then the worker's events).
  asio::post(ex, [weak = weak_from_this(), w] {
    if (auto self = weak.lock(); self && !w->unreported)
      self->on_fork.emit(cluster_worker(w));
  });
  try {
    scheduler->prepare(fo);
    w->child = childproc::fork(ex, program, args, std::move(fo));
  } catch (const std::system_error& e) {
    ec = e.code();
    w->dead = w->unreported = true;
    return w;
  }
  w->pid = w->child.original_pid();
  w->connected = w->child.connected();
  w->started = clock_type::now();
  live[w->id] = w;
  slots[slot]->current = w;
  attach(w);
  return w;
}

void cluster_state::attach(const std::shared_ptr<cluster_worker_state>& w) {
  std::weak_ptr<cluster_state> weak = weak_from_this();
  std::weak_ptr<cluster_worker_state> ww = w;
  auto& child = w->child;
  // A launch that failed before its channel existed (no descriptor for it) has none: its error
  // and close still come.
  if (child.has_channel()) {
    child.on_message([weak, ww](const message& m) {
      auto self = weak.lock();
      auto w = ww.lock();
      if (!self || !w || w->unreported)
        return;
      if (m.is_json() && m.json().is_object() && m.json().as_object().contains("cc"))
        return self->control_message(w, m.json().as_object());
      self->on_message.emit(cluster_worker(w), m);
    });
    child.on_disconnect([weak, ww] {
      auto self = weak.lock();
      auto w = ww.lock();
      if (!self || !w)
        return;
      w->connected = false;
      // round_robin: whoever disconnected (the worker itself too), no more connections for it.
      self->scheduler->worker_gone(w->id);
      if (!w->unreported)
        self->on_disconnect.emit(cluster_worker(w));
    });
  }
  // `exit`, as Node's cluster: a `close` waits for the stdio pipes, which a grandchild may hold
  // long after the worker ended. `close` only for a launch that failed (no exit then).
  auto ended = [weak, ww](std::optional<int> code, std::optional<int> signal) {
    auto self = weak.lock();
    auto w = ww.lock();
    if (self && w && !w->dead)
      self->worker_ended(w, code, signal);
  };
  child.on_exit(ended);
  child.on_close(ended);
  // A launch that failed (a missing program): `error`, then its close is the worker's `exit`.
  child.on_error([weak, ww](const process_error& e) {
    auto self = weak.lock();
    auto w = ww.lock();
    if (self && w && !w->unreported)
      self->on_error.emit(cluster_worker(w), e.code());
  });
}

void cluster_state::control_message(const std::shared_ptr<cluster_worker_state>& w,
                                    const boost::json::object& o) {
  const auto* kind = o.at("cc").if_string();
  if (!kind)
    return;
  if (*kind == "online")
    return on_online.emit(cluster_worker(w));
  if (*kind != "listening")
    return scheduler->worker_control(w->id, o);
  boost::system::error_code ec;
  const auto* address = o.contains("address") ? o.at("address").if_string() : nullptr;
  const auto* port = o.contains("port") ? o.at("port").if_int64() : nullptr;
  tcp::endpoint at = endpoint;
  if (address && port)
    at = tcp::endpoint(asio::ip::make_address(std::string(address->c_str()), ec),
                       static_cast<unsigned short>(*port));
  w->listening = true;
  if (w->child.connected())
    scheduler->worker_listening(w->id, w->child.channel());
  if (auto watcher = std::exchange(w->watcher, {}))
    watcher(true);
  on_listening.emit(cluster_worker(w), at);
}

void cluster_state::worker_ended(const std::shared_ptr<cluster_worker_state>& w,
                                 std::optional<int> code, std::optional<int> signal) {
  w->dead = true;
  w->connected = false;
  w->kill_timer.cancel();
  live.erase(w->id);
  scheduler->worker_gone(w->id);
  auto& slot = *slots[w->slot];
  const bool current = slot.current == w;
  if (current)
    slot.current.reset();
  // A replacement that failed gives the slot back to the old worker, if that one still runs;
  // if it does not (it crashed meanwhile), the slot is restarted: it is never left empty.
  auto watcher = std::exchange(w->watcher, {});
  const bool replacement = current && watcher;
  if (watcher)
    watcher(false);
  if (current && !slot.current && (replacement || !w->after_disconnect) && opt.autorestart &&
      !stopping)
    restart_later(w->slot, w, !replacement); // a failed replacement is no crash of the slot
  finish_shutdown_if_done(); // before user code: a handler that throws must not lose it
  if (!w->unreported)
    on_exit.emit(cluster_worker(w), code, signal);
}

// Counts `last`'s exit (unless it was a replacement that failed: that is no crash of the slot)
// and gives the slot up, with the give_up event, after max_restarts unstable exits in a row.
bool cluster_state::give_up_if_unstable(std::size_t index,
                                        const std::shared_ptr<cluster_worker_state>& last) {
  auto& slot = *slots[index];
  const auto uptime = clock_type::now() - last->started;
  if (uptime >= opt.backoff_reset_after)
    slot.crashes = 0;
  slot.unstable = uptime < opt.min_uptime ? slot.unstable + 1 : 0;
  if (slot.unstable <= opt.max_restarts)
    return false;
  slot.given_up = true;
  const std::size_t restarts = slot.unstable - 1;
  asio::post(ex, [weak = weak_from_this(), last, restarts] {
    if (auto self = weak.lock())
      self->on_give_up.emit(cluster_worker(last), restarts);
  });
  return true;
}

void cluster_state::restart_later(std::size_t index,
                                  const std::shared_ptr<cluster_worker_state>& last, bool counts) {
  auto& slot = *slots[index];
  if (counts && give_up_if_unstable(index, last))
    return;
  slot.restart_timer.expires_after(backoff(opt, counts ? slot.crashes++ : slot.crashes));
  slot.restart_timer.async_wait([weak = weak_from_this(), index](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopping || self->slots[index]->current)
      return;
    std::error_code launch;
    auto w = self->fork_worker(index, launch);
    if (!launch)
      return;
    self->restart_later(index, w); // an unstable start: backs off, gives up after max_restarts
    self->on_error.emit(cluster_worker(w), launch);
  });
}

void cluster_state::disconnect(const std::shared_ptr<cluster_worker_state>& w) {
  if (w->dead)
    return;
  w->after_disconnect = true;
  scheduler->worker_gone(w->id); // round_robin: no more connections (those sent are delivered)
  if (w->child.connected())
    w->child.disconnect();
  w->kill_timer.expires_after(opt.kill_timeout);
  w->kill_timer.async_wait([ww = std::weak_ptr(w)](boost::system::error_code ec) {
    if (auto w = ww.lock(); w && !ec && !w->dead)
      w->child.kill(SIGKILL);
  });
}

// Starts a new worker for `index`; once it listens the old one is disconnected, and `then`
// runs when the old one has exited. If the new one exits or times out before listening, the
// old one stays.
void cluster_state::replace(std::size_t index, std::function<void(std::error_code)> then) {
  auto& slot = *slots[index];
  auto old = slot.current;
  std::error_code launch;
  auto fresh = fork_worker(index, launch);
  if (launch)
    return then(launch); // the old worker stays; `then` completes through a post
  slot.replacing = true;
  auto timer = std::make_shared<asio::steady_timer>(ex, opt.listen_timeout);
  auto finish = [weak = weak_from_this(), index, then](std::error_code ec) {
    if (auto self = weak.lock())
      self->slots[index]->replacing = false;
    then(ec);
  };
  timer->async_wait([weak = weak_from_this(), fresh](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || fresh->listening || fresh->dead)
      return;
    fresh->after_disconnect = fresh->listen_timed_out = true; // its exit: timed_out
    fresh->child.kill(SIGKILL);
  });
  fresh->watcher = [weak = weak_from_this(), fresh, old, index, timer, finish](bool listening) {
    auto self = weak.lock();
    timer->cancel();
    if (!self)
      return;
    if (!listening) {
      if (old && !old->dead)
        self->slots[index]->current = old;
      return finish(fresh->listen_timed_out ? errc::timed_out : errc::worker_start_failed);
    }
    if (!old || old->dead)
      return finish({});
    old->watcher = [finish](bool) { finish({}); };
    self->disconnect(old);
  };
}

// The reload's completion is the state's (not a capture of the watchers), so that destroy()
// can abort it: a watcher holding it would keep its work guard, and io.run(), for ever.
void cluster_state::reload_from(std::size_t index) {
  while (index < slots.size() && (slots[index]->given_up || slots[index]->replacing))
    ++index;
  if (stopping || index >= slots.size())
    return finish_reload(stopping ? asio::error::operation_aborted : boost::system::error_code{});
  replace(index, [weak = weak_from_this(), index](std::error_code ec) {
    auto self = weak.lock();
    if (!self)
      return;
    if (self->stopping) // a shutdown disconnected the new worker or the old one: aborted
      return self->finish_reload(asio::error::operation_aborted);
    if (ec)
      return self->finish_reload(ec);
    self->reload_from(index + 1);
  });
}

void cluster_state::finish_reload(boost::system::error_code ec) {
  reloading = false;
  if (auto done = std::move(reload_done))
    done->complete(ec);
}

void cluster_state::check_memory() {
  for (std::size_t i = 0; i < slots.size(); ++i) {
    auto w = slots[i]->current;
    if (w && w->listening && !slots[i]->replacing && w->pid &&
        posix::resident_bytes(*w->pid) > opt.max_memory_restart)
      replace(i, [](std::error_code) {});
  }
}

void cluster_state::watch_memory() {
  memory_timer.expires_after(opt.memory_check_interval);
  memory_timer.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopping)
      return;
    self->check_memory();
    self->watch_memory();
  });
}

void cluster_state::finish_shutdown_if_done() {
  if (!stopping || !live.empty() || !shutdown_done)
    return;
  if (scheduler) // none before start()
    scheduler->close();
  auto done = std::move(shutdown_done);
  auto hold = std::move(keep_alive);
  done->complete({});
}

void cluster_state::destroy() noexcept {
  stopping = true;
  memory_timer.cancel();
  for (auto& slot : slots)
    slot->restart_timer.cancel();
  for (auto& [id, w] : live) {
    w->watcher = {}; // a new worker's watcher holds itself, its timer and the reload
    w->after_disconnect = true;
    w->kill_timer.cancel();
    std::error_code ignored;
    w->child.kill(SIGKILL, ignored);
  }
  if (scheduler)
    scheduler->close();
  if (reload_done)
    finish_reload(asio::error::operation_aborted);
}

// The program, arguments and launch options every fork of a worker uses, checked before
// start() changes anything (a launch that would throw fails start(ec) instead). Returns what
// failed, for the throwing form's message.
const char* cluster_state::settle_launch(std::error_code& ec) {
  launch = opt.worker_options;
  // The cluster forks again from these options at every restart; a handed-over pipe serves one
  // spawn only (and its number may name another descriptor by then).
  if (std::any_of(launch.stdio.begin(), launch.stdio.end(),
                  [](const stdio_spec& s) { return s.kind == stdio_kind::from; })) {
    close_handed_over(launch.stdio); // refused: the pipe is closed, as a spawn's refusal does
    ec = make_error_code(errc::invalid_argument);
    return "childproc: cluster::start: stdio::from in worker_options (a cluster forks its "
           "workers again at every restart; a handed-over pipe serves one spawn)";
  }
  try {
    program = opt.program.empty() ? self_exe() : opt.program;
    args = opt.args ? *opt.args : own_arguments();
    settle_fork_stdio(launch, program, args);
  } catch (const std::system_error& e) {
    ec = e.code();
    return "childproc: cluster::start: worker_options";
  }
  return nullptr;
}

const char* cluster_state::start(std::error_code& ec) {
  ec.clear();
  const std::size_t count = opt.workers.value_or(std::max(1u, std::thread::hardware_concurrency()));
  // Checked before anything changes: a second start() must not touch the running cluster.
  if (started || stopping || count == 0 || opt.backlog <= 0) {
    ec = make_error_code(errc::invalid_argument);
    return "childproc: cluster::start";
  }
  if (const char* what = settle_launch(ec); ec)
    return what;
  scheduler = make_primary_scheduler(opt.scheduling, ex);
  if (!scheduler) {
    ec = make_error_code(errc::invalid_argument);
    return "childproc: cluster::start: scheduling";
  }
  endpoint = scheduler->open(opt.endpoint, opt.backlog, ec);
  if (ec)
    return "childproc: cluster::start: the endpoint";
  started = true;
  for (std::size_t i = 0; i < count; ++i)
    slots.push_back(std::make_unique<cluster_slot>(ex));
  for (std::size_t i = 0; i < count && !ec; ++i)
    fork_worker(i, ec);
  if (ec) {
    // The workers already launched are killed, unreported: to the caller they never started.
    for (auto& [id, w] : live)
      w->unreported = true;
    destroy(); // the cluster is done
    return "childproc: cluster::start: a worker's launch";
  }
  if (opt.max_memory_restart > 0)
    watch_memory();
  return nullptr;
}

} // namespace detail

inline namespace v1 {

// ---- cluster_worker ----

unsigned cluster_worker::id() const noexcept {
  return state_ ? state_->id : 0;
}
std::size_t cluster_worker::slot() const noexcept {
  return state_ ? state_->slot : 0;
}
std::optional<pid_t> cluster_worker::pid() const noexcept {
  return state_ ? state_->pid : std::nullopt;
}
child_process& cluster_worker::process() const {
  if (!state_)
    throw std::logic_error("childproc: empty cluster_worker");
  return state_->child;
}
bool cluster_worker::send(const message& msg, send_handler done) const {
  return process().send(msg, std::move(done));
}
void cluster_worker::disconnect() const {
  if (!state_ || state_->dead)
    return;
  if (auto owner = state_->owner.lock())
    return owner->disconnect(state_);
  state_->after_disconnect = true;
  if (state_->child.connected())
    state_->child.disconnect();
}
bool cluster_worker::kill(int signal) const {
  if (!state_ || state_->dead)
    return false;
  state_->after_disconnect = true;
  if (auto owner = state_->owner.lock(); owner && owner->scheduler)
    owner->scheduler->worker_gone(state_->id);
  if (state_->child.connected())
    state_->child.disconnect();
  return state_->child.kill(signal);
}
bool cluster_worker::is_connected() const noexcept {
  return state_ && state_->connected && state_->child.connected();
}
bool cluster_worker::is_dead() const noexcept {
  return !state_ || state_->dead;
}
bool cluster_worker::exited_after_disconnect() const noexcept {
  return state_ && state_->after_disconnect;
}
bool cluster_worker::is_listening() const noexcept {
  return state_ && state_->listening && !state_->dead;
}

// ---- cluster ----

cluster::cluster(const asio::any_io_executor& ex, cluster_options options)
    : state_(std::make_shared<detail::cluster_state>(ex, std::move(options))) {}
cluster::cluster(cluster&&) noexcept = default;
// What the handle leaves behind (destroyed, or assigned over): a shutdown under way lives on
// until it completes; anything else is killed.
void cluster::release() noexcept {
  if (!state_)
    return;
  if (state_->shutdown_done)
    state_->keep_alive = state_;
  else
    state_->destroy();
  state_.reset();
}
cluster& cluster::operator=(cluster&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
  }
  return *this;
}
cluster::~cluster() {
  release();
}

void cluster::start() {
  std::error_code ec;
  if (const char* what = state_->start(ec); ec)
    throw std::system_error(ec, what);
}

void cluster::start(std::error_code& ec) {
  state_->start(ec);
}

tcp::endpoint cluster::endpoint() const {
  return state_->endpoint;
}

std::vector<cluster_worker> cluster::workers() const {
  std::vector<cluster_worker> all;
  for (const auto& [id, w] : state_->live)
    all.emplace_back(w);
  return all;
}

void cluster::start_reload(const state_ptr& state, done_ptr done) {
  auto& s = *state;
  if (!s.started || s.reloading || s.stopping)
    return done->complete(make_error_code(errc::invalid_argument));
  s.reloading = true;
  s.reload_done = std::move(done);
  s.reload_from(0);
}

void cluster::start_shutdown(const state_ptr& state, done_ptr done) {
  auto& s = *state;
  if (s.stopping)
    return done->complete(make_error_code(errc::invalid_argument));
  s.stopping = true;
  s.shutdown_done = std::move(done);
  s.memory_timer.cancel();
  for (auto& slot : s.slots)
    slot->restart_timer.cancel();
  auto live = s.live; // disconnect() does not end a worker inline, but keep the walk stable
  for (auto& [id, w] : live)
    s.disconnect(w);
  // Completes (posted) at once when no worker is left.
  asio::post(s.ex, [weak = std::weak_ptr(state)] {
    if (auto self = weak.lock())
      self->finish_shutdown_if_done();
  });
}

cluster& cluster::on_fork(worker_handler handler) {
  state_->on_fork.add(std::move(handler));
  return *this;
}
cluster& cluster::on_online(worker_handler handler) {
  state_->on_online.add(std::move(handler));
  return *this;
}
cluster&
cluster::on_listening(std::function<void(const cluster_worker&, const tcp::endpoint&)> handler) {
  state_->on_listening.add(std::move(handler));
  return *this;
}
cluster& cluster::on_message(std::function<void(const cluster_worker&, const message&)> handler) {
  state_->on_message.add(std::move(handler));
  return *this;
}
cluster& cluster::on_disconnect(worker_handler handler) {
  state_->on_disconnect.add(std::move(handler));
  return *this;
}
cluster& cluster::on_exit(
    std::function<void(const cluster_worker&, std::optional<int>, std::optional<int>)> handler) {
  state_->on_exit.add(std::move(handler));
  return *this;
}
cluster& cluster::on_give_up(std::function<void(const cluster_worker&, std::size_t)> handler) {
  state_->on_give_up.add(std::move(handler));
  return *this;
}

cluster& cluster::on_error(std::function<void(const cluster_worker&, std::error_code)> handler) {
  state_->on_error.add(std::move(handler));
  return *this;
}

asio::any_io_executor cluster::executor() const noexcept {
  return state_->ex;
}
asio::any_io_executor cluster::executor_of(const state_ptr& state) noexcept {
  return state->ex;
}

} // namespace v1
} // namespace childproc
