// serve(): the worker side of a pool (see serve.hpp; the envelope is pool_protocol.hpp).
#include <childproc/serve.hpp>

#include "channel_state.hpp"
#include "child_state.hpp"
#include "pool_protocol.hpp"
#include "serve_channel.hpp"

#include <childproc/channel.hpp>
#include <childproc/error.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <deque>
#include <exception>
#include <optional>
#include <typeinfo>
#include <utility>
#include <vector>

namespace childproc::detail {

struct serve_state;

struct served_task {
  std::string name;
  std::uint64_t id = 0;
  message data;
  std::weak_ptr<serve_state> server;
  bool cancelled = false;
  bool finished = false;      // its done or fail was sent: nothing more goes out for it
  bool coroutine_run = false; // a coroutine handler was spawned for it
  // Bound to the coroutine's co_spawn: a cancel aborts its pending co_awaits.
  boost::asio::cancellation_signal cancel_signal;
};

namespace {

using pool_wire::envelope;
using pool_wire::op;

// How long one pump runs queued items before it lets the event loop run (see pump()).
constexpr std::chrono::microseconds pump_budget{500};

// The demangled name of an exception's type, "Error" when it cannot be demangled.
std::string type_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string("Error");
}

// The caller's error object for the exception being handled.
message error_of_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return message(boost::json::value{{"name", type_name(typeid(e))}, {"message", e.what()}});
  } catch (...) {
    return message(boost::json::value{{"name", "Error"}, {"message", "unknown exception"}});
  }
}

// Reports on stderr the exception being handled, thrown by the hook `hook` (no caller hears of it).
void report_hook_failure(const char* hook) {
  const message error = error_of_current_exception();
  std::fprintf(stderr, "childproc::serve: %s threw %s: %s\n", hook,
               error.json().at("name").as_string().c_str(),
               error.json().at("message").as_string().c_str());
}

// A task waiting for its turn, or an init or broadcast to deliver in order with the tasks.
struct work_item {
  op kind = op::task;
  std::shared_ptr<served_task> task; // op::task
  message data;                      // op::init, op::broadcast
};

// The tasks received and not finished, by id. The pool numbers its tasks in the order it sends
// them, so an insert is a push_back and a lookup a binary search: no node to allocate per task.
class live_tasks {
public:
  bool insert(std::shared_ptr<served_task> task) { // false: a task with its id is live
    const auto at = lower_bound(task->id);
    if (at != tasks_.end() && (*at)->id == task->id)
      return false;
    tasks_.insert(at, std::move(task));
    return true;
  }
  served_task* find(std::uint64_t id) const {
    const auto at = lower_bound(id);
    return at != tasks_.end() && (*at)->id == id ? at->get() : nullptr;
  }
  void erase(std::uint64_t id) {
    if (const auto at = lower_bound(id); at != tasks_.end() && (*at)->id == id)
      tasks_.erase(at);
  }
  auto begin() const { return tasks_.begin(); }
  auto end() const { return tasks_.end(); }

private:
  std::vector<std::shared_ptr<served_task>>::const_iterator lower_bound(std::uint64_t id) const {
    if (tasks_.empty() || tasks_.back()->id < id) // the usual case: a new task
      return tasks_.end();
    return std::lower_bound(tasks_.begin(), tasks_.end(), id,
                            [](const auto& task, std::uint64_t v) { return task->id < v; });
  }
  std::vector<std::shared_ptr<served_task>> tasks_; // in id order
};

} // namespace

struct serve_state : std::enable_shared_from_this<serve_state> {
  serve_state(boost::asio::io_context& ctx, channel c, task_table t,
              std::optional<task_handler> every_name, serve_options o)
      : io(ctx), ch(std::move(c)), tasks(std::move(t)), every(std::move(every_name)),
        options(std::move(o)) {}

  void attach();
  void on_message(const message& m) noexcept;
  void on_bytes(std::string_view bytes) noexcept; // a bytes frame (take_bytes_frames)
  // Feeds the reader through `feed`, then takes the envelope that completes.
  template <class Feed>
  void on_read(Feed feed) noexcept;
  bool accept(envelope e);
  void cancel(served_task& task);
  void schedule();
  void pump();
  void run_item(work_item& item);
  void run_init(const message& data);
  void run_broadcast(const message& data);
  void run_task(const std::shared_ptr<served_task>& task);
  void spawn_coroutine(const task_handler::coroutine& handler,
                       const std::shared_ptr<served_task>& task);
  void finish(served_task& task, op kind, message data);
  void end(int code);
  void on_disconnect();
  void poll();

  boost::asio::io_context& io;
  channel ch;
  task_table tasks;
  std::optional<task_handler> every; // the single-handler form serves every name
  serve_options options;
  pool_wire::reader reader;
  std::deque<work_item> queue;
  live_tasks live; // received, not finished
  bool got_init = false;
  bool pump_posted = false;
  bool pump_due = false; // queued during a read burst: the channel's after_reads runs the pump
  bool stopping = false; // no more work: the channel is closing or closed
  int exit_code = 0;
};

void serve_state::attach() {
  // The results of one pump's tasks go out in one write (progress is written at once).
  auto* state = channel_access::state(ch);
  state->batch_sends = true;
  std::weak_ptr<serve_state> weak = shared_from_this();
  // The tasks of one read run as soon as the read's delivery is over, with no turn of the event
  // loop before them nor between them and their results' write.
  state->after_reads = [weak] {
    if (auto self = weak.lock(); self && std::exchange(self->pump_due, false))
      self->pump();
  };
  ch.on_message([weak](const message& m) {
    if (auto self = weak.lock())
      self->on_message(m);
  });
  // The binary envelopes, read from the frames themselves: no message per envelope.
  state->take_bytes_frames([weak](std::string_view bytes) {
    if (auto self = weak.lock())
      self->on_bytes(bytes);
  });
  ch.on_error([weak](std::error_code ec) {
    // The channel's own decoding failed: the pool sent something that is not a frame.
    if (auto self = weak.lock();
        self && (ec == errc::malformed_message || ec == errc::message_too_large))
      self->exit_code = 2;
  });
  ch.on_disconnect([weak] {
    if (auto self = weak.lock())
      self->on_disconnect();
  });
}

// Only bookkeeping here: user code runs from posted work (pump), never inside the channel's
// delivery, which may itself be inside a handler's task_context::cancelled().
void serve_state::on_message(const message& m) noexcept {
  on_read([&](std::error_code& ec) { return reader.feed(m, ec); });
}

void serve_state::on_bytes(std::string_view bytes) noexcept {
  on_read([&](std::error_code& ec) { return reader.feed_bytes(bytes, ec); });
}

template <class Feed>
void serve_state::on_read(Feed feed) noexcept {
  if (stopping)
    return;
  try {
    std::error_code ec;
    auto e = feed(ec);
    if (ec || (e && !accept(std::move(*e))))
      end(2);
  } catch (...) { // out of memory while queueing: nothing sane can follow
    end(2);
  }
}

// Takes one envelope from the pool; false when it is not one the pool may send now.
bool serve_state::accept(envelope e) {
  if (e.kind == op::init) {
    if (got_init)
      return false;
    got_init = true;
    queue.push_back({op::init, nullptr, std::move(e.data)});
  } else if (!got_init) {
    return false;
  } else if (e.kind == op::task) {
    auto task = std::make_shared<served_task>();
    task->name = std::move(e.name);
    task->id = e.id;
    task->data = std::move(e.data);
    task->server = weak_from_this();
    if (!live.insert(task))
      return false; // the id of a task still running
    queue.push_back({op::task, std::move(task), {}});
  } else if (e.kind == op::cancel) {
    if (auto* task = live.find(e.id))
      cancel(*task);
    return true; // a cancel for a finished task crossed its result: ignored
  } else if (e.kind == op::broadcast) {
    queue.push_back({op::broadcast, nullptr, std::move(e.data)});
  } else {
    return false; // a worker's envelope
  }
  schedule();
  return true;
}

void serve_state::cancel(served_task& task) {
  if (task.cancelled)
    return;
  task.cancelled = true;
  if (task.coroutine_run)
    task.cancel_signal.emit(boost::asio::cancellation_type::terminal);
  // A coroutine still queued gets the signal when it is spawned.
}

void serve_state::schedule() {
  if (pump_posted || queue.empty() || stopping)
    return;
  if (channel_access::state(ch)->in_read_burst) {
    pump_due = true; // run by after_reads, once the delivery is over
    return;
  }
  pump_posted = true;
  boost::asio::post(io, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->pump_posted = false;
      self->pump();
    }
  });
}

// Items run one after another for at most pump_budget, then the channel's reads (cancels, new
// tasks) and the results' write get their turn: tiny tasks are answered in batches, and a long
// one is answered as soon as it returns.
void serve_state::pump() {
  // The step's results are written when it ends, in one write, without waiting for the event
  // loop (uncorked on the way out of an exception too).
  struct corked {
    channel_state* state;
    explicit corked(channel_state* s) : state(s) { state->cork(); }
    ~corked() { state->uncork(); }
  } batch(channel_access::state(ch));
  const auto start = std::chrono::steady_clock::now();
  while (!stopping && !queue.empty()) {
    work_item item = std::move(queue.front());
    queue.pop_front();
    run_item(item);
    if (std::chrono::steady_clock::now() - start >= pump_budget)
      break;
  }
  schedule();
}

void serve_state::run_item(work_item& item) {
  if (item.kind == op::init)
    run_init(item.data);
  else if (item.kind == op::broadcast)
    run_broadcast(item.data);
  else
    run_task(item.task);
}

void serve_state::run_init(const message& data) {
  try {
    if (options.on_init)
      options.on_init(data);
  } catch (...) {
    report_hook_failure("on_init");
    end(1);
    return;
  }
  pool_wire::send(ch, envelope{op::ready, 0, {}, {}}, reader.last_form());
  channel_access::state(ch)->flush(); // before the first task, which may end the process
}

void serve_state::run_broadcast(const message& data) {
  try {
    if (options.on_broadcast)
      options.on_broadcast(data);
  } catch (...) {
    // Nobody waits for a broadcast's outcome: it is reported here and the worker goes on.
    report_hook_failure("on_broadcast");
  }
}

void serve_state::run_task(const std::shared_ptr<served_task>& task) {
  const task_handler* handler = nullptr;
  if (every)
    handler = &*every;
  else if (auto it = tasks.find(task->name); it != tasks.end())
    handler = &it->second;
  if (!handler) {
    finish(*task, op::fail,
           message(boost::json::value{{"name", "UnknownTask"},
                                      {"message", "no task named '" + task->name + "'"}}));
    return;
  }
  if (const auto* coroutine = std::get_if<task_handler::coroutine>(&handler->call())) {
    spawn_coroutine(*coroutine, task);
    return;
  }
  op kind = op::done;
  message result;
  try {
    task_context context(task);
    if (const auto* plain = std::get_if<task_handler::plain>(&handler->call()))
      result = (*plain)(task->data);
    else
      result = std::get<task_handler::with_context>(handler->call())(task->data, context);
  } catch (...) {
    kind = op::fail;
    result = error_of_current_exception();
  }
  finish(*task, kind, std::move(result));
}

void serve_state::spawn_coroutine(const task_handler::coroutine& handler,
                                  const std::shared_ptr<served_task>& task) {
  // The handler is called inside the coroutine, so that one that throws before its first
  // co_await fails its task like any other.
  auto body = [handler, task]() -> boost::asio::awaitable<message> {
    co_return co_await handler(task->data, task_context(task));
  };
  auto completion = [weak = weak_from_this(), task](std::exception_ptr error, message result) {
    auto self = weak.lock();
    if (self && error) {
      message failure;
      try {
        std::rethrow_exception(error);
      } catch (...) {
        failure = error_of_current_exception();
      }
      self->finish(*task, op::fail, std::move(failure));
    } else if (self) {
      self->finish(*task, op::done, std::move(result));
    }
    // The signal's slot holds co_spawn's cancellation handler, which the coroutine's frame may
    // still reach while it unwinds after this call: the task is released after it.
    if (self)
      boost::asio::post(self->io, [keep = task] {});
  };
  task->coroutine_run = true;
  boost::asio::co_spawn(
      io, std::move(body),
      boost::asio::bind_cancellation_slot(task->cancel_signal.slot(), std::move(completion)));
  if (task->cancelled) // cancelled while it was queued
    task->cancel_signal.emit(boost::asio::cancellation_type::terminal);
}

void serve_state::finish(served_task& task, op kind, message data) {
  if (task.finished)
    return;
  task.finished = true;
  live.erase(task.id);
  if (pool_wire::send(ch, envelope{kind, task.id, {}, std::move(data)}, reader.last_form()))
    // Over the channel's limit: the caller hears why instead of waiting for it forever.
    pool_wire::send(ch,
                    envelope{op::fail,
                             task.id,
                             {},
                             message(boost::json::value{
                                 {"name", "MessageTooLarge"},
                                 {"message", "the task's answer is larger than the channel's "
                                             "max_message_size"}})},
                    reader.last_form());
}

// A malformed envelope (code 2) or a failed on_init (code 1): the worker stops taking work and
// serve() returns once the channel has closed.
void serve_state::end(int code) {
  if (stopping)
    return;
  stopping = true;
  exit_code = code;
  queue.clear();
  if (ch.connected())
    ch.disconnect();
}

void serve_state::on_disconnect() {
  stopping = true;
  queue.clear();
  // Nobody waits for the results any more: a handler polling cancelled() stops.
  for (const auto& task : live)
    task->cancelled = true;
  io.stop(); // serve() returns even if the user left other work on the io_context
}

void serve_state::poll() {
  if (auto* state = channel_access::state(ch); state && !stopping)
    state->drain_now();
}

int serve_channel(boost::asio::io_context& io, channel ch, task_table tasks,
                  std::optional<task_handler> every, serve_options options) {
  auto state = std::make_shared<serve_state>(io, std::move(ch), std::move(tasks), std::move(every),
                                             std::move(options));
  state->attach();
  if (io.stopped())
    io.restart();
  io.run();
  return state->exit_code;
}

} // namespace childproc::detail

namespace childproc {
inline namespace v1 {

const std::string& task_context::name() const noexcept {
  return task_->name;
}

std::uint64_t task_context::id() const noexcept {
  return task_->id;
}

void task_context::progress(const message& update) {
  auto server = task_->server.lock();
  // After its result, a progress message would name a task the pool no longer knows.
  if (!server || task_->finished)
    return;
  detail::pool_wire::send(
      server->ch,
      detail::pool_wire::envelope{detail::pool_wire::op::progress, task_->id, {}, update},
      server->reader.last_form());
  // Written now: a synchronous handler keeps the event loop (and a posted flush) waiting.
  detail::channel_access::state(server->ch)->flush();
}

bool task_context::cancelled() {
  if (!task_->cancelled)
    if (auto server = task_->server.lock())
      server->poll();
  return task_->cancelled;
}

bool is_pool_worker() noexcept {
  return std::getenv("CHILDPROC_POOL_WORKER") != nullptr;
}

namespace {

int serve_with(boost::asio::io_context& io, task_table tasks, std::optional<task_handler> every,
               serve_options options, std::error_code& ec) {
  ec.clear();
  channel ch;
  try {
    ch = parent_channel(io);
  } catch (...) {
    ec = detail::current_exception_code();
    return 1;
  }
  // The worker's own children are not pool workers.
  ::unsetenv("CHILDPROC_POOL_WORKER");
  return detail::serve_channel(io, std::move(ch), std::move(tasks), std::move(every),
                               std::move(options));
}

int throw_on_error(int code, const std::error_code& ec) {
  if (ec)
    throw std::system_error(ec, "childproc::serve: this process has no parent channel");
  return code;
}

} // namespace

int serve(boost::asio::io_context& io, task_table tasks, serve_options options) {
  std::error_code ec;
  const int code = serve_with(io, std::move(tasks), std::nullopt, std::move(options), ec);
  return throw_on_error(code, ec);
}

int serve(boost::asio::io_context& io, task_handler handler, serve_options options) {
  std::error_code ec;
  const int code = serve_with(io, {}, std::move(handler), std::move(options), ec);
  return throw_on_error(code, ec);
}

int serve(boost::asio::io_context& io, task_table tasks, serve_options options,
          std::error_code& ec) {
  return serve_with(io, std::move(tasks), std::nullopt, std::move(options), ec);
}

int serve(boost::asio::io_context& io, task_handler handler, serve_options options,
          std::error_code& ec) {
  return serve_with(io, {}, std::move(handler), std::move(options), ec);
}

} // namespace v1
} // namespace childproc
