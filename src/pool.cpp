// pool: the parent side of childproc::pool (see pool.hpp and docs/pool.md).
//
// One pool_state per pool, on the pool's executor. Tasks wait in `queue` until a ready worker has
// room; each worker is a forked process with the pool's envelope on its channel. Every user
// callback (completions, progress, events) is posted, so the pool's bookkeeping is always
// finished before user code runs and no user code runs inside an initiating function. The
// handlers the pool gives to its children and timers hold weak references: dropping the pool
// drops everything, and a late event of a dead worker finds nothing to do.
#include <childproc/child_process.hpp>
#include <childproc/detail/handler_list.hpp>
#include <childproc/fork.hpp>
#include <childproc/pool.hpp>

#include "channel_state.hpp"
#include "handed_over.hpp"
#include "latency_histogram.hpp"
#include "pool_protocol.hpp"
#include "posix/resident.hpp"
#include "serve_channel.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <initializer_list>
#include <list>
#include <sys/resource.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace childproc::detail {
namespace asio = boost::asio;
using bsys_error = boost::system::error_code;
using clock_type = std::chrono::steady_clock;
using pool_wire::envelope;
using pool_wire::op;
// Thread workers' channels: the same default limit as fork()'s.
constexpr std::size_t max_message = 64u << 20;

struct pool_worker;

struct pool_task {
  std::uint64_t id = 0;
  message payload;
  run_options options;
  std::unique_ptr<completion<bsys_error, message>> done; // null once completed
  clock_type::time_point submitted{};
  clock_type::time_point dispatched{};
  std::list<std::shared_ptr<pool_task>>::iterator queued_at{};
  bool queued = false;
  std::weak_ptr<pool_worker> worker;       // while running
  std::optional<asio::steady_timer> timer; // the timeout, then a cancel's grace
};

enum class worker_phase {
  starting, // launched, its `ready` not seen yet
  ready,    // takes tasks
  retiring, // disconnected by the pool (recycling, idle, close): ends by itself
  killed,   // signalled by the pool (timeout, cancel grace, malformed, destroy)
};

struct pool_worker {
  explicit pool_worker(const asio::any_io_executor& ex) : timer(ex) {}
  pool_worker(const pool_worker&) = delete;
  pool_worker& operator=(const pool_worker&) = delete;
  // A thread worker ends once its channel has closed (and its handler has returned).
  ~pool_worker() {
    if (!thread.joinable())
      return;
    close_thread_channel();
    thread.join();
  }
  void close_thread_channel() {
    if (auto* state = channel_access::state(ch); state && state->open)
      state->close_silently();
  }

  child_process child; // a process worker
  std::thread thread;  // a thread worker
  channel ch;          // the envelope's channel: the child's, or the thread's socket pair
  pid_t pid = 0;       // the worker process (this process for a thread worker)
  worker_phase phase = worker_phase::starting;
  bool ever_ready = false;
  bool retired_by_pool = false; // an end the pool asked for is no start-up failure
  std::vector<std::shared_ptr<pool_task>> running; // sent and not answered (cancelled included)
  std::size_t tasks_done = 0;
  pool_wire::reader reader;
  pool_wire::form wire_form = pool_wire::form::json; // binary on a framed channel
  asio::steady_timer timer; // start-up timeout, idle timeout, kill escalation
};

struct pool_state : std::enable_shared_from_this<pool_state> {
  pool_state(asio::any_io_executor executor, pool_options options);

  void start() { balance(); }
  void run(message task, run_options options, std::unique_ptr<completion<bsys_error, message>> d);
  void close(std::unique_ptr<completion<bsys_error>> done);
  void destroy(std::error_code reason);
  void broadcast(const message& update);
  pool_stats stats() const;

  asio::any_io_executor ex;
  pool_options opt;
  std::size_t min_workers = 1;
  std::size_t max_workers = 1;
  std::size_t max_queue = 0;
  std::list<std::shared_ptr<pool_task>> queue;
  std::vector<std::shared_ptr<pool_worker>> workers;
  enum class phase { open, closing, closed } state = phase::open;
  bool needs_drain = false;

  handler_list<std::function<void()>> drain_handlers;
  handler_list<std::function<void()>> needs_drain_handlers;
  handler_list<std::function<void(pid_t)>> create_handlers;
  handler_list<std::function<void(pid_t, const exit_status&)>> exit_handlers;
  handler_list<std::function<void(std::error_code)>> error_handlers;

private:
  void enqueue(std::shared_ptr<pool_task> t);
  void watch_cancellation(const std::shared_ptr<pool_task>& t);
  void cancel(const std::shared_ptr<pool_task>& t);
  void finish(pool_task& t, bsys_error ec, message result = {});
  void dispatch();
  std::shared_ptr<pool_worker> pick_worker();
  void start_task(const std::shared_ptr<pool_worker>& w, std::shared_ptr<pool_task> t);
  void arm_timeout(const std::shared_ptr<pool_task>& t);
  void timed_out(const std::shared_ptr<pool_task>& t);
  void queue_changed();
  void balance();
  std::size_t count_workers(std::initializer_list<worker_phase> phases) const;
  std::size_t live_workers() const;
  bool spawn_worker();
  std::shared_ptr<pool_worker> launch(const std::shared_ptr<pool_worker>& w);
  std::shared_ptr<pool_worker> launch_process(const std::shared_ptr<pool_worker>& w);
  std::shared_ptr<pool_worker> launch_thread(const std::shared_ptr<pool_worker>& w);
  void attach_channel(const std::shared_ptr<pool_worker>& w);
  void apply_limits(pool_worker& w);
  // What the worker's reader made of a message or a bytes frame.
  void on_read(const std::shared_ptr<pool_worker>& w, std::optional<envelope> e,
               std::error_code ec);
  void on_envelope(const std::shared_ptr<pool_worker>& w, envelope e);
  void on_ready(const std::shared_ptr<pool_worker>& w);
  void on_answer(const std::shared_ptr<pool_worker>& w, envelope e);
  void on_progress(const std::shared_ptr<pool_worker>& w, envelope e);
  void after_task(const std::shared_ptr<pool_worker>& w);
  void malformed(const std::shared_ptr<pool_worker>& w);
  void retire(const std::shared_ptr<pool_worker>& w);
  void end_soon(const std::shared_ptr<pool_worker>& w);
  void kill(const std::shared_ptr<pool_worker>& w, bool at_once);
  void ended(const std::shared_ptr<pool_worker>& w, exit_status status);
  void startup_failed();
  void fail_queue(std::error_code ec);
  void check_closed();
  void finish_close(std::error_code ec);
  template <class F>
  void post_event(F f);

  std::uint64_t next_task_ = 1;
  std::size_t startup_failures_ = 0;
  bool respawn_paused_ = false;
  bool probing_ = false; // after a pause: one worker at a time until one becomes ready
  std::chrono::milliseconds backoff_{100};
  asio::steady_timer backoff_timer_;
  std::unique_ptr<completion<bsys_error>> close_done_;
  asio::steady_timer close_timer_;
  std::shared_ptr<pool_state> keep_alive_; // while closing
  // Thread workers the pool gave up on (timeout, cancel grace, destroy): their handlers may still
  // run; their threads are joined when the pool is destroyed.
  std::vector<std::shared_ptr<pool_worker>> abandoned_threads_;

  std::uint64_t completed_ = 0;
  std::uint64_t failed_ = 0;
  std::uint64_t workers_started_ = 0;
  std::chrono::microseconds run_total_{0};
  clock_type::time_point started_ = clock_type::now();
  latency_histogram run_time_;
  latency_histogram wait_time_;
};

namespace {

std::size_t cpu_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

std::uint64_t micros_between(clock_type::time_point a, clock_type::time_point b) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

// The task `id` among those `w` is running.
auto find_running(pool_worker& w, std::uint64_t id) {
  return std::find_if(w.running.begin(), w.running.end(),
                      [id](const auto& t) { return t->id == id; });
}

// What a task learns of its worker's end: {"pid", "code", "signal"}.
message death_report(pid_t pid, const exit_status& status) {
  boost::json::object o;
  o["pid"] = pid;
  o["code"] = status.code ? boost::json::value(*status.code) : boost::json::value(nullptr);
  o["signal"] =
      status.signal ? boost::json::value(signal_name(*status.signal)) : boost::json::value(nullptr);
  return message(boost::json::value(std::move(o)));
}

std::error_code failure_code(const message& error) {
  const auto* obj = error.is_json() ? error.json().if_object() : nullptr;
  const auto* name = obj ? obj->if_contains("name") : nullptr;
  const std::string_view named =
      name && name->is_string() ? std::string_view(name->get_string()) : std::string_view();
  if (named == "UnknownTask")
    return make_error_code(errc::unknown_task);
  if (named == "MessageTooLarge")
    return make_error_code(errc::message_too_large);
  return make_error_code(errc::task_failed);
}

void validate(const pool_options& o) {
  const auto bad = [](const char* what) {
    throw std::system_error(make_error_code(errc::invalid_argument), what);
  };
  // First: every refusal must close the pipes stdio::from handed over, and this one does.
  const auto& stdio = o.worker_options.stdio;
  if (std::any_of(stdio.begin(), stdio.end(),
                  [](const stdio_spec& s) { return s.kind == stdio_kind::from; })) {
    close_handed_over(stdio); // refused: the pipe is closed as a spawn would have
    bad("pool_options::worker_options: stdio::from() hands one pipe to one spawn, and the pool "
        "forks every worker from these options");
  }
  if (o.max_workers && *o.max_workers == 0)
    bad("pool_options::max_workers must be at least 1");
  if (o.min_workers && o.max_workers && *o.min_workers > *o.max_workers)
    bad("pool_options::min_workers is above max_workers");
  if (o.concurrent_tasks_per_worker == 0)
    bad("pool_options::concurrent_tasks_per_worker must be at least 1");
  const auto negative = [](std::chrono::milliseconds d) { return d.count() < 0; };
  if (negative(o.idle_timeout) || negative(o.task_timeout) || negative(o.cancel_grace) ||
      negative(o.kill_after) || negative(o.close_timeout) || negative(o.startup_timeout))
    bad("pool_options: a negative duration");
  if (o.isolation == isolation::thread && (o.tasks.empty() || !o.program.empty()))
    bad("pool_options: isolation::thread needs `tasks` and no `program`");
  if (o.isolation == isolation::process && !o.tasks.empty())
    bad("pool_options::tasks is for isolation::thread (a worker process has its own)");
  if (o.max_startup_failures == 0)
    bad("pool_options::max_startup_failures must be at least 1");
  if (o.kill_signal.unknown_name())
    throw std::system_error(make_error_code(errc::unknown_signal),
                            "pool_options::kill_signal names no signal");
  if (o.kill_signal <= 0 || o.kill_signal >= NSIG)
    bad("pool_options::kill_signal is no signal");
}

} // namespace

pool_state::pool_state(asio::any_io_executor executor, pool_options options)
    : ex(std::move(executor)), opt(std::move(options)), backoff_timer_(ex), close_timer_(ex) {
  validate(opt);
  max_workers = opt.max_workers.value_or((cpu_count() * 3 + 1) / 2);
  min_workers =
      std::min(opt.min_workers.value_or(std::max<std::size_t>(cpu_count() / 2, 1)), max_workers);
  max_queue = opt.max_queue.resolve(max_workers);
  if (opt.program.empty() && opt.isolation == isolation::process) {
    opt.program = self_exe();
    if (opt.args.empty())
      opt.args = {"--childproc-pool-worker"};
  }
  opt.worker_options.env_overrides["CHILDPROC_POOL_WORKER"] = "1";
}

template <class F>
void pool_state::post_event(F f) {
  asio::post(ex, [weak = weak_from_this(), f = std::move(f)]() mutable {
    if (auto self = weak.lock())
      f(*self);
  });
}

// --- tasks -------------------------------------------------------------------------------------

void pool_state::run(message task, run_options options,
                     std::unique_ptr<completion<bsys_error, message>> done) {
  if (state != phase::open)
    return done->complete(make_error_code(errc::pool_closed), {});
  auto t = std::make_shared<pool_task>();
  t->id = next_task_++;
  t->payload = std::move(task);
  t->options = std::move(options);
  t->done = std::move(done);
  t->submitted = clock_type::now();
  if (auto w = queue.empty() ? pick_worker() : nullptr) {
    watch_cancellation(t);
    wait_time_.record(0);
    return start_task(w, std::move(t));
  }
  if (respawn_paused_ && count_workers({worker_phase::ready}) == 0)
    return t->done->complete(make_error_code(errc::worker_start_failed), {});
  if (queue.size() >= max_queue)
    return t->done->complete(make_error_code(errc::queue_full), {});
  watch_cancellation(t);
  enqueue(std::move(t));
}

void pool_state::enqueue(std::shared_ptr<pool_task> t) {
  t->queued = true;
  queue.push_back(t);
  t->queued_at = std::prev(queue.end());
  queue_changed();
  balance();
}

// Posted: cancel() completes the task, and completing clears this slot, which would destroy the
// handler while it runs (Asio forbids it). A task that completed meanwhile is left alone: cancel()
// finds it done.
void pool_state::watch_cancellation(const std::shared_ptr<pool_task>& t) {
  auto slot = t->done->cancellation_slot();
  if (!slot.is_connected())
    return;
  slot.assign([ex = ex, weak_pool = weak_from_this(),
               weak_task = std::weak_ptr<pool_task>(t)](asio::cancellation_type) {
    asio::post(ex, [weak_pool, weak_task] {
      auto self = weak_pool.lock();
      auto task = weak_task.lock();
      if (self && task)
        self->cancel(task);
    });
  });
}

void pool_state::cancel(const std::shared_ptr<pool_task>& t) {
  if (!t->done)
    return;
  if (t->queued) {
    queue.erase(t->queued_at);
    t->queued = false;
    finish(*t, asio::error::operation_aborted);
    return queue_changed();
  }
  auto w = t->worker.lock();
  finish(*t, asio::error::operation_aborted);
  if (!w || w->phase == worker_phase::killed)
    return;
  // Ask first; a worker that has not answered after the grace is killed and replaced. Its
  // answer, when it comes, only frees its slot.
  pool_wire::send(w->ch, {op::cancel, t->id, {}, {}}, w->wire_form);
  t->timer.emplace(ex);
  t->timer->expires_after(opt.cancel_grace);
  t->timer->async_wait([weak_pool = weak_from_this(), weak_worker = std::weak_ptr(w),
                        weak_task = std::weak_ptr(t)](bsys_error ec) {
    auto self = weak_pool.lock();
    auto worker = weak_worker.lock();
    if (ec || !self || !worker || !weak_task.lock() || worker->phase == worker_phase::killed)
      return;
    self->kill(worker, false);
  });
}

void pool_state::finish(pool_task& t, bsys_error ec, message result) {
  if (!t.done)
    return;
  if (ec)
    ++failed_;
  else
    ++completed_;
  auto done = std::move(t.done);
  done->complete(ec, std::move(result));
}

void pool_state::dispatch() {
  while (!queue.empty()) {
    auto w = pick_worker();
    if (!w)
      break;
    auto t = std::move(queue.front());
    queue.pop_front();
    t->queued = false;
    wait_time_.record(micros_between(t->submitted, clock_type::now()));
    start_task(w, std::move(t));
  }
  queue_changed();
  balance();
}

// The ready worker with the fewest tasks, among those with room.
std::shared_ptr<pool_worker> pool_state::pick_worker() {
  std::shared_ptr<pool_worker> best;
  for (auto& w : workers) {
    if (w->phase != worker_phase::ready || w->running.size() >= opt.concurrent_tasks_per_worker)
      continue;
    if (!best || w->running.size() < best->running.size())
      best = w;
    if (best->running.empty())
      break;
  }
  return best;
}

void pool_state::start_task(const std::shared_ptr<pool_worker>& w, std::shared_ptr<pool_task> t) {
  // Sent first: a task over the channel's limit fails alone and leaves the worker as it was (the
  // send only queues; no answer can come before the bookkeeping below).
  envelope e{op::task, t->id, t->options.name, std::move(t->payload)};
  if (const auto refused = pool_wire::send(w->ch, std::move(e), w->wire_form))
    return finish(*t, refused);
  t->dispatched = clock_type::now();
  w->timer.cancel(); // an idle timeout
  t->worker = w;
  arm_timeout(t);
  w->running.push_back(std::move(t));
}

void pool_state::arm_timeout(const std::shared_ptr<pool_task>& t) {
  const auto limit = t->options.timeout.count() > 0 ? t->options.timeout : opt.task_timeout;
  if (limit.count() <= 0)
    return;
  t->timer.emplace(ex);
  t->timer->expires_after(limit);
  t->timer->async_wait([weak_pool = weak_from_this(), weak_task = std::weak_ptr(t)](bsys_error ec) {
    auto self = weak_pool.lock();
    auto task = weak_task.lock();
    if (!ec && self && task)
      self->timed_out(task);
  });
}

void pool_state::timed_out(const std::shared_ptr<pool_task>& t) {
  auto w = t->worker.lock();
  finish(*t, make_error_code(errc::timed_out));
  if (w && w->phase != worker_phase::killed)
    kill(w, false);
}

// The drain edges (Piscina's needsDrain / drain): needs_drain when the queue reaches max_queue,
// drain when it has emptied after that.
void pool_state::queue_changed() {
  if (!needs_drain && max_queue != 0 && queue.size() >= max_queue) {
    needs_drain = true;
    post_event([](pool_state& s) { s.needs_drain_handlers.emit(); });
  } else if (needs_drain && queue.empty()) {
    needs_drain = false;
    post_event([](pool_state& s) { s.drain_handlers.emit(); });
  }
}

// --- workers -----------------------------------------------------------------------------------

std::size_t pool_state::count_workers(std::initializer_list<worker_phase> phases) const {
  return static_cast<std::size_t>(std::count_if(workers.begin(), workers.end(), [&](const auto& w) {
    return std::find(phases.begin(), phases.end(), w->phase) != phases.end();
  }));
}

std::size_t pool_state::live_workers() const {
  return count_workers({worker_phase::starting, worker_phase::ready});
}

// Starts workers up to min_workers, and more (up to max_workers) while queued tasks outnumber
// the room that starting workers will bring.
void pool_state::balance() {
  if (state == phase::closed || respawn_paused_)
    return;
  std::size_t live = live_workers();
  std::size_t starting = count_workers({worker_phase::starting});
  while (live < max_workers && ((state == phase::open && live < min_workers) ||
                                queue.size() > starting * opt.concurrent_tasks_per_worker)) {
    if (probing_ && workers.size() > count_workers({worker_phase::ready}))
      return; // one probe at a time, and only once the last one has settled
    if (!spawn_worker())
      return;
    ++live;
    ++starting;
    if (respawn_paused_)
      return;
  }
}

// False when the launch threw (a bad cwd, a refused uid): a start-up failure, retried from a
// posted handler (bounded by the start-up pause) so that the queue never waits for nothing.
bool pool_state::spawn_worker() {
  auto w = std::make_shared<pool_worker>(ex);
  workers.push_back(w);
  if (!launch(w)) {
    workers.erase(std::find(workers.begin(), workers.end(), w));
    startup_failed();
    if (!respawn_paused_)
      post_event([](pool_state& s) { s.balance(); });
    return false;
  }
  if (w->pid != 0) // an exec that failed in the child has no pid: only its `error` comes
    ++workers_started_;
  apply_limits(*w);
  pool_wire::send(w->ch, {op::init, 0, {}, opt.worker_data}, w->wire_form);
  w->timer.expires_after(opt.startup_timeout);
  w->timer.async_wait(
      [weak_pool = weak_from_this(), weak_worker = std::weak_ptr(w)](bsys_error ec) {
        auto self = weak_pool.lock();
        auto worker = weak_worker.lock();
        if (!ec && self && worker && worker->phase == worker_phase::starting)
          self->kill(worker, true);
      });
  if (w->pid != 0)
    post_event([pid = w->pid](pool_state& s) { s.create_handlers.emit(pid); });
  return true;
}

std::shared_ptr<pool_worker> pool_state::launch(const std::shared_ptr<pool_worker>& w) {
  return opt.isolation == isolation::thread ? launch_thread(w) : launch_process(w);
}

// Forks the worker with the pool's handlers; null (with an `error` event) when that throws.
std::shared_ptr<pool_worker> pool_state::launch_process(const std::shared_ptr<pool_worker>& w) {
  try {
    w->child = fork(ex, opt.program, opt.args, opt.worker_options);
  } catch (const std::system_error& e) {
    post_event([ec = e.code()](pool_state& s) { s.error_handlers.emit(ec); });
    return nullptr;
  }
  w->pid = w->child.pid().value_or(0);
  w->ch = w->child.channel();
  attach_channel(w);
  const std::weak_ptr<pool_state> weak_pool = weak_from_this();
  const std::weak_ptr<pool_worker> weak_worker = w;
  const auto on_end = [weak_pool, weak_worker] {
    auto self = weak_pool.lock();
    auto worker = weak_worker.lock();
    if (self && worker)
      self->ended(worker, worker->child.status().value_or(exit_status{}));
  };
  w->child.on_exit([on_end](std::optional<int>, std::optional<int>) { on_end(); });
  // A launch that failed in the child (ENOENT, EACCES) has no pid and no exit, only `error`.
  w->child.on_error([on_end, weak_worker](const process_error& e) {
    auto worker = weak_worker.lock();
    if (worker && worker->pid == 0 && e.step() != spawn_step::none)
      on_end();
  });
  return w;
}

// A thread running serve() on its own io_context, over a socket pair: the same envelope, so
// that every feature behaves as with processes. Its end is posted back as an exit with serve()'s
// status. Null (with an `error` event) when the socket pair or the thread cannot be made.
std::shared_ptr<pool_worker> pool_state::launch_thread(const std::shared_ptr<pool_worker>& w) {
  const auto failed = [this](int error) {
    post_event([ec = std::error_code(error, std::system_category())](pool_state& s) {
      s.error_handlers.emit(ec);
    });
    return nullptr;
  };
  int pair[2];
  posix::unique_fd mine, theirs;
  if (const int err = posix::take_pair_above_stdio(
          ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair), pair, mine,
          theirs))
    return failed(err);
  auto state = std::make_shared<channel_state>(ex, std::move(mine), wire::framed, max_message);
  try {
    w->thread = std::thread([fd = theirs.get(), tasks = opt.tasks, hooks = opt.thread_hooks,
                             ex = ex, weak_pool = weak_from_this(),
                             weak_worker = std::weak_ptr(w)]() mutable {
      int code = 1;
      try {
        posix::unique_fd own(fd); // first: closed whatever fails next
        asio::io_context io(1);
        channel ours(std::make_shared<channel_state>(io.get_executor(), std::move(own),
                                                     wire::framed, max_message));
        channel_access::state(ours)->start();
        code = serve_channel(io, std::move(ours), std::move(tasks), std::nullopt, std::move(hooks));
      } catch (...) { // out of memory: the worker ends with 1
      }
      asio::post(ex, [weak_pool, weak_worker, code] {
        auto self = weak_pool.lock();
        auto worker = weak_worker.lock();
        if (self && worker)
          self->ended(worker, exit_status{.code = code});
      });
    });
  } catch (const std::system_error& e) {
    return failed(e.code().value());
  }
  theirs.release(); // the thread owns it now
  w->pid = ::getpid();
  w->ch = channel(state);
  state->start();
  attach_channel(w);
  return w;
}

void pool_state::attach_channel(const std::shared_ptr<pool_worker>& w) {
  channel_access::state(w->ch)->batch_sends = true; // a dispatch's tasks go out in one write
  w->wire_form = pool_wire::form_for(w->ch);
  const std::weak_ptr<pool_state> weak_pool = weak_from_this();
  const std::weak_ptr<pool_worker> weak_worker = w;
  w->ch.on_message([weak_pool, weak_worker](const message& m) {
    auto self = weak_pool.lock();
    auto worker = weak_worker.lock();
    if (self && worker && worker->phase != worker_phase::killed) {
      std::error_code ec;
      auto e = worker->reader.feed(m, ec); // before on_read's arguments copy `ec`
      self->on_read(worker, std::move(e), ec);
    }
  });
  // The binary envelopes, read from the frames themselves: no message per envelope.
  channel_access::state(w->ch)->take_bytes_frames([weak_pool, weak_worker](std::string_view b) {
    auto self = weak_pool.lock();
    auto worker = weak_worker.lock();
    if (self && worker && worker->phase != worker_phase::killed) {
      std::error_code ec;
      auto e = worker->reader.feed_bytes(b, ec);
      self->on_read(worker, std::move(e), ec);
    }
  });
  // A worker whose channel closed can take no task and answer none: it is expected to end by
  // itself, and is killed if it has not after max(kill_after, 1 s).
  w->ch.on_disconnect([weak_pool, weak_worker] {
    auto self = weak_pool.lock();
    auto worker = weak_worker.lock();
    if (self && worker && worker->phase != worker_phase::killed)
      self->end_soon(worker);
  });
}

void pool_state::apply_limits(pool_worker& w) {
  if (w.pid == 0 || opt.isolation == isolation::thread)
    return;
  std::error_code failure;
  if (opt.max_worker_address_space > 0) {
    const rlimit cap{opt.max_worker_address_space, opt.max_worker_address_space};
    if (::prlimit(w.pid, RLIMIT_AS, &cap, nullptr) != 0)
      failure = {errno, std::system_category()};
  }
  if (opt.nice != 0) {
    errno = 0;
    const int base = ::getpriority(PRIO_PROCESS, 0);
    if (errno == 0 && ::setpriority(PRIO_PROCESS, static_cast<id_t>(w.pid), base + opt.nice) != 0)
      failure = {errno, std::system_category()};
  }
  if (failure)
    post_event([failure](pool_state& s) { s.error_handlers.emit(failure); });
}

void pool_state::on_read(const std::shared_ptr<pool_worker>& w, std::optional<envelope> e,
                         std::error_code ec) {
  if (ec)
    return malformed(w);
  if (e)
    on_envelope(w, std::move(*e));
}

void pool_state::on_envelope(const std::shared_ptr<pool_worker>& w, envelope e) {
  switch (e.kind) {
  case op::ready:
    if (w->phase != worker_phase::starting)
      return malformed(w);
    return on_ready(w);
  case op::done:
  case op::fail:
    return on_answer(w, std::move(e));
  case op::progress:
    return on_progress(w, std::move(e));
  default:
    return malformed(w);
  }
}

void pool_state::on_ready(const std::shared_ptr<pool_worker>& w) {
  w->phase = worker_phase::ready;
  w->ever_ready = true;
  w->timer.cancel();
  startup_failures_ = 0;
  probing_ = false;
  backoff_ = std::chrono::milliseconds(100);
  dispatch();
  if (w->running.empty())
    after_task(w);
}

void pool_state::on_answer(const std::shared_ptr<pool_worker>& w, envelope e) {
  auto it = find_running(*w, e.id);
  if (it == w->running.end())
    return malformed(w);
  auto t = std::move(*it);
  w->running.erase(it);
  ++w->tasks_done;
  t->timer.reset();
  if (t->done) {
    const auto now = clock_type::now();
    run_time_.record(micros_between(t->dispatched, now));
    run_total_ += std::chrono::duration_cast<std::chrono::microseconds>(now - t->dispatched);
    // The code first: the result is moved into the call.
    const std::error_code ec = e.kind == op::done ? std::error_code() : failure_code(e.data);
    finish(*t, ec, std::move(e.data));
  }
  after_task(w);
}

void pool_state::on_progress(const std::shared_ptr<pool_worker>& w, envelope e) {
  auto it = find_running(*w, e.id);
  if (it == w->running.end())
    return malformed(w);
  if (!(*it)->done || !(*it)->options.on_progress)
    return;
  // Posted where the completion will be, so that it comes first even on a strand or another
  // context; delivered even when the completion is already on its way (it was sent first).
  asio::post((*it)->done->executor(),
             [task = *it, update = std::move(e.data)] { task->options.on_progress(update); });
}

// After a task left `w`: recycle it when it has done its share or grew too large, retire it when
// idle beyond min_workers, and hand out the queue.
void pool_state::after_task(const std::shared_ptr<pool_worker>& worker) {
  const auto w = worker; // retire() and dispatch() may start workers: `workers` may move
  if (w->phase == worker_phase::retiring)
    retire(w); // its last task has answered
  if (w->phase == worker_phase::ready) {
    const bool worn_out = opt.max_tasks_per_worker > 0 && w->tasks_done >= opt.max_tasks_per_worker;
    const bool too_large = opt.max_worker_rss > 0 && opt.isolation == isolation::process &&
                           w->tasks_done > 0 && posix::resident_bytes(w->pid) > opt.max_worker_rss;
    if (worn_out || too_large)
      retire(w);
  }
  dispatch();
  if (w->phase != worker_phase::ready || !w->running.empty() || live_workers() <= min_workers ||
      state != phase::open)
    return check_closed();
  if (opt.idle_timeout.count() == 0)
    return retire(w);
  w->timer.expires_after(opt.idle_timeout);
  w->timer.async_wait(
      [weak_pool = weak_from_this(), weak_worker = std::weak_ptr(w)](bsys_error ec) {
        auto self = weak_pool.lock();
        auto worker = weak_worker.lock();
        if (!ec && self && worker && worker->phase == worker_phase::ready &&
            worker->running.empty() && self->live_workers() > self->min_workers)
          self->retire(worker);
      });
}

// A worker that sent something other than the pool's envelope: its tasks fail with
// malformed_message, it is killed and replaced.
void pool_state::malformed(const std::shared_ptr<pool_worker>& w) {
  const auto ec = make_error_code(errc::malformed_message);
  for (auto& t : w->running)
    finish(*t, ec);
  kill(w, true);
  post_event([ec](pool_state& s) { s.error_handlers.emit(ec); });
}

// Takes `w` out of service: no new task; once its running tasks have answered, its channel is
// disconnected and it ends by itself.
void pool_state::retire(const std::shared_ptr<pool_worker>& w) {
  w->retired_by_pool = true;
  if (w->phase == worker_phase::starting || w->phase == worker_phase::ready) {
    w->phase = worker_phase::retiring;
    balance();
  }
  if (w->phase != worker_phase::retiring || !w->running.empty() || !w->ch.connected())
    return;
  w->ch.disconnect();
  end_soon(w);
}

// `w` is expected to end by itself (its channel is closing); it is killed if it has not after
// max(kill_after, 1 s).
void pool_state::end_soon(const std::shared_ptr<pool_worker>& w) {
  if (w->phase == worker_phase::starting || w->phase == worker_phase::ready) {
    w->phase = worker_phase::retiring;
    balance();
  }
  w->timer.expires_after(std::max(opt.kill_after, std::chrono::milliseconds(1000)));
  w->timer.async_wait(
      [weak_pool = weak_from_this(), weak_worker = std::weak_ptr(w)](bsys_error ec) {
        auto self = weak_pool.lock();
        auto worker = weak_worker.lock();
        if (!ec && self && worker && worker->phase != worker_phase::killed)
          self->kill(worker, false);
      });
}

// Signals `w` (SIGKILL at once, or kill_signal and SIGKILL after kill_after); its tasks fail
// with worker_died when it has ended.
void pool_state::kill(const std::shared_ptr<pool_worker>& w, bool at_once) {
  w->phase = worker_phase::killed;
  if (opt.isolation == isolation::thread) {
    // A thread cannot be killed: closing its channel stops its serve() once its handler returns.
    // For the pool it ends now (its tasks fail, a replacement may start); the thread is joined
    // when the pool goes.
    w->timer.cancel();
    w->close_thread_channel();
    abandoned_threads_.push_back(w);
    return ended(w, exit_status{.unknown = true});
  }
  std::error_code ignored; // the worker may have ended already
  w->child.kill(at_once ? SIGKILL : opt.kill_signal.number(), ignored);
  if (!at_once) {
    w->timer.expires_after(opt.kill_after);
    w->timer.async_wait([weak_worker = std::weak_ptr(w)](bsys_error ec) {
      std::error_code ignored_too;
      if (auto worker = weak_worker.lock(); !ec && worker)
        worker->child.kill(SIGKILL, ignored_too);
    });
  } else {
    w->timer.cancel();
  }
  balance();
}

void pool_state::ended(const std::shared_ptr<pool_worker>& w, exit_status status) {
  auto it = std::find(workers.begin(), workers.end(), w);
  if (it == workers.end())
    return;
  workers.erase(it);
  w->timer.cancel();
  const auto report = death_report(w->pid, status);
  for (auto& t : w->running)
    finish(*t, make_error_code(errc::worker_died), report);
  w->running.clear();
  if (w->pid != 0)
    post_event([pid = w->pid, status](pool_state& s) { s.exit_handlers.emit(pid, status); });
  if (!w->ever_ready && !w->retired_by_pool && state != phase::closed)
    startup_failed();
  balance();
  dispatch();
  check_closed();
}

// Start-up failures in a row pause the respawning (no fork bomb from a worker that cannot start)
// and fail the queue if no worker is left to run it; a backoff that doubles up to 10 s resumes it.
void pool_state::startup_failed() {
  if (++startup_failures_ < opt.max_startup_failures || respawn_paused_)
    return;
  respawn_paused_ = true;
  const auto ec = make_error_code(errc::worker_start_failed);
  if (count_workers({worker_phase::ready}) == 0)
    fail_queue(ec);
  post_event([ec](pool_state& s) { s.error_handlers.emit(ec); });
  backoff_timer_.expires_after(backoff_);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(10000));
  backoff_timer_.async_wait([weak_pool = weak_from_this()](bsys_error ec) {
    if (auto self = weak_pool.lock(); !ec && self) {
      self->respawn_paused_ = false;
      self->probing_ = true;
      self->startup_failures_ = self->opt.max_startup_failures - 1; // one more failure pauses
      self->balance();
    }
  });
}

void pool_state::fail_queue(std::error_code ec) {
  auto waiting = std::move(queue);
  queue.clear();
  for (auto& t : waiting) {
    t->queued = false;
    finish(*t, ec);
  }
  queue_changed();
}

// --- lifecycle ---------------------------------------------------------------------------------

void pool_state::close(std::unique_ptr<completion<bsys_error>> done) {
  if (state != phase::open)
    return done->complete(make_error_code(errc::pool_closed));
  state = phase::closing;
  close_done_ = std::move(done);
  keep_alive_ = shared_from_this();
  close_timer_.expires_after(opt.close_timeout);
  close_timer_.async_wait([weak_pool = weak_from_this()](bsys_error ec) {
    if (auto self = weak_pool.lock(); !ec && self && self->state == phase::closing) {
      self->destroy(make_error_code(errc::timed_out));
    }
  });
  check_closed();
}

// While closing: once nothing is queued or running, the workers are disconnected; once they have
// all ended, the close completes.
void pool_state::check_closed() {
  if (state != phase::closing || !queue.empty())
    return;
  for (auto& w : workers)
    if (!w->running.empty())
      return;
  for (auto& w : std::vector(workers))
    if (w->phase == worker_phase::starting || w->phase == worker_phase::ready)
      retire(w);
  if (workers.empty())
    finish_close({});
}

void pool_state::finish_close(std::error_code ec) {
  state = phase::closed;
  close_timer_.cancel();
  backoff_timer_.cancel();
  if (close_done_)
    std::exchange(close_done_, nullptr)->complete(ec);
  // The last reference may be this one: release it from a posted handler, after this returns.
  asio::post(ex, [keep = std::move(keep_alive_)] {});
}

void pool_state::destroy(std::error_code reason) {
  if (state == phase::closed)
    return;
  state = phase::closed;
  fail_queue(make_error_code(errc::pool_closed));
  for (auto& w : std::vector(workers)) {
    for (auto& t : w->running)
      finish(*t, make_error_code(errc::pool_closed));
    w->running.clear();
    kill(w, true);
  }
  finish_close(reason);
}

void pool_state::broadcast(const message& update) {
  for (auto& w : workers)
    if (w->phase == worker_phase::starting || w->phase == worker_phase::ready)
      pool_wire::send(w->ch, {op::broadcast, 0, {}, update}, w->wire_form);
}

pool_stats pool_state::stats() const {
  pool_stats s;
  s.completed = completed_;
  s.failed = failed_;
  s.queue_size = queue.size();
  s.workers = workers.size();
  for (const auto& w : workers) {
    if (w->phase != worker_phase::ready)
      continue;
    (w->running.empty() ? s.idle_workers : s.busy_workers) += 1;
  }
  s.workers_started = workers_started_;
  const auto elapsed = micros_between(started_, clock_type::now());
  if (elapsed > 0)
    s.utilization = static_cast<double>(run_total_.count()) /
                    (static_cast<double>(elapsed) * static_cast<double>(max_workers));
  s.run_time = run_time_.summary();
  s.wait_time = wait_time_.summary();
  return s;
}

} // namespace childproc::detail

namespace childproc {
inline namespace v1 {

pool::pool(const boost::asio::any_io_executor& ex, pool_options options)
    : state_(std::make_shared<detail::pool_state>(ex, std::move(options))) {
  state_->start(); // its events are posted: handlers attached now still hear them
}

pool::pool(pool&&) noexcept = default;

pool& pool::operator=(pool&& other) noexcept {
  if (this != &other) {
    if (state_ && state_->state == detail::pool_state::phase::open)
      state_->destroy(make_error_code(errc::pool_closed));
    state_ = std::move(other.state_);
  }
  return *this;
}

pool::~pool() {
  if (state_ && state_->state == detail::pool_state::phase::open)
    state_->destroy(make_error_code(errc::pool_closed));
}

void pool::start_run(message task, run_options options,
                     std::unique_ptr<detail::completion<boost::system::error_code, message>> done) {
  state_->run(std::move(task), std::move(options), std::move(done));
}

void pool::start_close(std::unique_ptr<detail::completion<boost::system::error_code>> done) {
  state_->close(std::move(done));
}

void pool::destroy() {
  state_->destroy(make_error_code(errc::pool_closed));
}

void pool::broadcast(const message& update) {
  state_->broadcast(update);
}

pool& pool::on_drain(std::function<void()> handler) {
  state_->drain_handlers.add(std::move(handler));
  return *this;
}
pool& pool::on_needs_drain(std::function<void()> handler) {
  state_->needs_drain_handlers.add(std::move(handler));
  return *this;
}
pool& pool::on_worker_create(std::function<void(pid_t pid)> handler) {
  state_->create_handlers.add(std::move(handler));
  return *this;
}
pool& pool::on_worker_exit(std::function<void(pid_t pid, const exit_status& status)> handler) {
  state_->exit_handlers.add(std::move(handler));
  return *this;
}
pool& pool::on_error(std::function<void(std::error_code ec)> handler) {
  state_->error_handlers.add(std::move(handler));
  return *this;
}

pool_stats pool::stats() const {
  return state_->stats();
}
bool pool::needs_drain() const noexcept {
  return state_->needs_drain;
}
std::size_t pool::queue_size() const noexcept {
  return state_->queue.size();
}
std::size_t pool::min_workers() const noexcept {
  return state_->min_workers;
}
std::size_t pool::max_workers() const noexcept {
  return state_->max_workers;
}
boost::asio::any_io_executor pool::executor() const noexcept {
  return state_->ex;
}

} // namespace v1
} // namespace childproc
