// child_process: the handle, and the state machine that orders its events.
#include "asio_error.hpp"
#include "child_state.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <mutex>
#include <stdexcept>

namespace childproc::detail {

child_state::child_state(asio::any_io_executor ex, std::string file_,
                         std::vector<std::string> args_, const spawn_options& options)
    : executor(std::move(ex)), file(std::move(file_)), args(std::move(args_)),
      kill_signal(options.kill_signal), timeout(options.timeout), kill_after(options.kill_after),
      kill_on_destroy(options.kill_on_destroy),
      leads_group(options.detached || options.process_group == 0), timeout_timer(executor),
      escalation_timer(executor) {}

child_state::~child_state() {
  // The executor went away (or was never run) before the child's exit was seen.
  if (watcher && !watcher->reaped())
    watcher->orphan();
}

void child_state::attach_pipes(std::vector<posix::unique_fd>& pipe_fds) {
  readers.resize(pipe_fds.size());
  for (std::size_t slot = 0; slot < pipe_fds.size(); ++slot) {
    if (!pipe_fds[slot])
      continue;
    // The fd is released only once a stream holds it: a failed registration leaves it owned.
    if (slot == 0) {
      in.reset(new writable_stream(*this, executor, pipe_fds[slot].get()));
    } else {
      readers[slot].reset(
          new readable_stream(*this, static_cast<int>(slot), executor, pipe_fds[slot].get()));
      ++open_readers;
    }
    pipe_fds[slot].release();
  }
}

void child_state::prepare_exit_watch() {
  // After the pipes: output the child writes before it exits then becomes ready before its exit.
  watcher.emplace(executor, posix::pidfd_enabled());
}

std::error_code child_state::launched(pid_t child_pid, posix::unique_fd pidfd) noexcept {
  if (auto ec = watcher->attach(child_pid, std::move(pidfd)))
    return ec;     // the child is gone (killed and reaped)
  pid = child_pid; // before the post: start() may run on another thread at once
  try {
    asio::post(executor, [self = shared_from_this()] { self->start(); });
  } catch (...) { // std::bad_alloc: the only failure left after the clone
    pid = 0;
    watcher->kill_and_reap();
    return {ENOMEM, std::system_category()};
  }
  return {};
}

void child_state::launch_failed(process_error error) {
  launch_error.emplace(std::move(error));
  watcher.reset(); // never attached
  if (in)
    in->close_now(); // writes fail with EPIPE, as on a pipe the child closed
  close_unused_channel();
  asio::post(executor, [self = shared_from_this()] { self->report_launch_failure(); });
}

void child_state::abandon() noexcept {
  watcher.reset();
  if (in)
    in->close_now();
  close_unused_channel();
}

void child_state::attach_channel(std::shared_ptr<channel_state> channel) {
  std::weak_ptr<child_state> weak = shared_from_this();
  channel->error_sink = [weak](std::error_code ec) {
    if (auto s = weak.lock())
      s->emit_error(process_error(ec, "channel", s->file, {}));
  };
  channel->closed_hook = [weak] {
    if (auto s = weak.lock())
      s->reader_ended();
  };
  ipc = std::move(channel);
  ++open_readers;
}

void child_state::close_unused_channel() noexcept {
  // Node: a fork that failed has a closed channel and emits no `disconnect`.
  if (!ipc || !ipc->open)
    return;
  ipc->close_silently();
  --open_readers;
}

void child_state::report_launch_failure() {
  // Node: exitCode is the negative errno; 'error', the streams' `end`, then 'close'; no 'spawn'
  // and no 'exit'. The status first, so that a throwing error handler leaves it consistent:
  // emit_error() then resumes with deliver(), which does the rest.
  status.emplace();
  status->code = -launch_error->code().value();
  emit_error(*launch_error);
  deliver();
}

void child_state::start() {
  // The bookkeeping first: the reads and the exit wait complete later, never inside this call,
  // so `spawn` still comes before any output, and a throwing spawn handler leaves nothing undone.
  for (auto& r : readers)
    if (r)
      r->start();
  if (ipc)
    ipc->start();
  if (timeout.count() > 0 && running() && timeout_timer) {
    timeout_timer->expires_after(timeout);
    timeout_timer->async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec && self->library_can_signal()) {
        self->timed_out = true;
        self->kill_by_library();
      }
    });
  }
  wait_for_exit();
  emit_last(spawn_handlers);
}

void child_state::wait_for_exit() {
  watcher->async_wait_exit([self = shared_from_this()](boost::system::error_code ec) {
    if (ec == asio::error::operation_aborted)
      return;
    self->on_exited();
  });
}

void child_state::on_exited() {
  exit_status st;
  if (!watcher->try_reap(st, /*keep_zombie=*/leads_group)) {
    wait_for_exit(); // spurious wake-up
    return;
  }
  status = st;
  if (!timeout_until_close) {
    timeout_timer->cancel();
    escalation_timer->cancel();
  }
  deliver();
}

void child_state::deliver() {
  resume_after_throw resume([this] { resume_later(); });
  if (status && !exit_delivered) {
    if (launch_error) {
      // A failed launch has no `exit`: its streams end without data (each `end` may throw:
      // a finished stream is skipped when this resumes), then the waiters complete.
      for (auto& r : readers)
        if (r && r->is_open())
          r->finish();
      exit_delivered = true;
      complete_waiters();
    } else {
      // The child is gone: what it wrote is already in its pipes. Deliver it before `exit`, so
      // that output never comes after the exit that followed it (the `ls` snippet).
      for (auto& r : readers)
        if (r)
          r->drain_available();
      if (ipc && ipc->open) {
        // Node's order: every message the child sent before it died, then `disconnect`, then
        // `exit`. The child is gone, so what it wrote is already in the socket: read it all now.
        ipc->drain_now();
        ipc->close({}, /*emit_now=*/true);
      }
      exit_delivered = true;
      complete_waiters(); // posts the completions
      emit_last(exit_handlers, status->code, status->signal);
    }
  }
  maybe_close();
}

void child_state::resume_later() {
  if (!io_shut_down)
    asio::post(executor, [self = shared_from_this()] { self->deliver(); });
}

void child_state::reader_ended() {
  --open_readers;
  maybe_close();
}

void child_state::maybe_close() {
  if (close_emitted || !status || !exit_delivered || open_readers > 0)
    return;
  close_emitted = true;
  timeout_timer->cancel();
  escalation_timer->cancel();
  if (watcher && watcher->exited()) {
    watcher->reap_zombie(); // a group leader kept until now
    watcher.reset();        // the pidfd is no longer needed
  }
  if (in)
    in->close_now();
  complete_close_waiters(false); // posts the completions
  // `close` is the last event: no handler is kept after it (one capturing the handle would keep
  // the state alive), except on_error's while a handle exists (send() and kill() can still fail).
  spawn_handlers.release();
  exit_handlers.release();
  if (handles == 0)
    error_handlers.release();
  emit_last(close_handlers, status->code, status->signal);
}

void child_state::complete_waiters() {
  auto pending = std::move(waiters);
  waiters.clear();
  const boost::system::error_code ec = wait_error();
  for (auto& w : pending) {
    auto result = ec;
    if (w->cancelled && !result)
      result = asio::error::operation_aborted;
    w->complete(result, *status, launch_error ? &*launch_error : nullptr);
  }
  complete_close_waiters(true); // a cancelled close wait does not wait for the streams
}

void child_state::complete_close_waiters(bool cancelled_only) {
  std::vector<std::unique_ptr<exit_waiter>> due;
  std::erase_if(close_waiters, [&](std::unique_ptr<exit_waiter>& w) {
    if (cancelled_only && !w->cancelled)
      return false;
    due.push_back(std::move(w));
    return true;
  });
  for (auto& w : due) {
    auto result = wait_error();
    if (w->cancelled && !result)
      result = asio::error::operation_aborted;
    w->complete(result, *status, launch_error ? &*launch_error : nullptr);
  }
}

boost::system::error_code child_state::wait_error() const noexcept {
  return launch_error ? to_asio_error(launch_error->code()) : boost::system::error_code();
}

void child_state::shut_down_io() noexcept {
  io_shut_down = true;
  timeout_timer.reset();
  escalation_timer.reset();
  for (auto& r : readers)
    if (r)
      r->shut_down_io();
  if (in)
    in->shut_down_io();
  // The channel's socket has the same problem; dropping our reference covers a channel nobody
  // else holds (a `channel` handle the application keeps is channel_state's to make safe).
  ipc.reset();
  if (watcher) {
    if (!watcher->reaped())
      watcher->orphan(); // the background reaper takes the child
    watcher.reset();
  }
  // As Asio does with the operations of a context that shuts down: never called, destroyed.
  auto abandoned = std::move(waiters);
  waiters.clear();
  auto abandoned_close = std::move(close_waiters);
  close_waiters.clear();
  spawn_handlers.release();
  exit_handlers.release();
  close_handlers.release();
  error_handlers.release();
}

int child_state::send_signal(int signal) noexcept {
  if (!running() || !watcher)
    return ESRCH;
  int err = watcher->send_signal(signal);
  if (err == 0 && signal != 0)
    killed = true;
  return err;
}

bool child_state::library_can_signal() const noexcept {
  if (!leads_group)
    return running();
  // The group's id is the child's pid, which cannot be reused while the child is unreaped
  // (it stays a zombie until close).
  return pid > 0 && watcher && !watcher->reaped() && !close_emitted;
}

int child_state::signal_by_library(int signal) noexcept {
  if (!leads_group)
    return send_signal(signal);
  if (!library_can_signal())
    return ESRCH;
  if (::kill(-pid, signal) < 0)
    return errno;
  killed = true;
  return 0;
}

void child_state::kill_by_library() {
  if (signal_by_library(kill_signal) != 0 || kill_after.count() <= 0 || !escalation_timer)
    return;
  escalation_timer->expires_after(kill_after);
  escalation_timer->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec && self->library_can_signal())
      self->signal_by_library(SIGKILL);
  });
}

void child_state::emit_error(const process_error& error) {
  // An error may come in the middle of a step (a failed launch's `close` is still due).
  resume_after_throw resume([this] { resume_later(); });
  error_handlers.emit(error);
}

// The execution context's list of live states, told when the context shuts down.
class io_registry final : public asio::execution_context::service {
public:
  static inline asio::execution_context::id id;
  explicit io_registry(asio::execution_context& context) : service(context) {}
  ~io_registry() override {
    for (auto* r = head_; r; r = r->next)
      r->registry = nullptr;
  }

  void add(io_registration& r) {
    std::lock_guard lock(mutex_);
    if (shut_down_) {
      r.registry = nullptr;
      return;
    }
    r.next = head_;
    if (head_)
      head_->prev = &r;
    head_ = &r;
  }
  void remove(io_registration& r) noexcept {
    std::lock_guard lock(mutex_);
    if (!r.registry)
      return; // taken off by shutdown()
    unlink(r);
  }

private:
  void unlink(io_registration& r) noexcept {
    (r.prev ? r.prev->next : head_) = r.next;
    if (r.next)
      r.next->prev = r.prev;
    r.prev = r.next = nullptr;
    r.registry = nullptr;
  }
  void shutdown() override {
    // Recursive: shutting one state down may destroy others (abandoned handlers held their
    // handles), and their registrations unlink themselves on this thread.
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    while (head_) {
      io_registration& r = *head_;
      unlink(r);
      if (auto state = r.state.weak_from_this().lock())
        state->shut_down_io();
    }
  }

  std::recursive_mutex mutex_;
  io_registration* head_ = nullptr;
  bool shut_down_ = false;
};

io_registration::io_registration(const asio::any_io_executor& ex, child_state& s) : state(s) {
  registry = &asio::use_service<io_registry>(asio::query(ex, asio::execution::context));
  registry->add(*this);
}

io_registration::~io_registration() {
  if (registry)
    registry->remove(*this);
}

void exit_waiter::complete(boost::system::error_code ec, const exit_status& status,
                           const process_error* launch_error) {
  if (done) {
    done->complete(ec, status);
    return;
  }
  std::exception_ptr failure;
  if (launch_error)
    failure = std::make_exception_ptr(*launch_error); // "spawn <file> ENOENT", with its fields
  else if (ec)
    failure = std::make_exception_ptr(boost::system::system_error(ec));
  done_throwing->complete(failure, status);
}

void add_exit_waiter(const std::shared_ptr<child_state>& state, std::unique_ptr<exit_waiter> w,
                     wait_event event) {
  if (state->io_shut_down)
    return; // abandoned, as any operation on a context that is gone
  const bool due = event == wait_event::exit ? state->status.has_value() : state->close_emitted;
  if (due) {
    w->complete(state->wait_error(), *state->status,
                state->launch_error ? &*state->launch_error : nullptr);
    return;
  }
  (event == wait_event::exit ? state->waiters : state->close_waiters).push_back(std::move(w));
}

void cancel_exit_waiter(const std::weak_ptr<child_state>& weak, exit_waiter* w) {
  auto state = weak.lock();
  if (!state)
    return;
  const auto listed = [w](const std::vector<std::unique_ptr<exit_waiter>>& list) {
    return std::any_of(list.begin(), list.end(), [w](const auto& x) { return x.get() == w; });
  };
  const bool at_close = listed(state->close_waiters);
  if (w->cancelled || (!at_close && !listed(state->waiters)))
    return;
  // Asio's rule: once the result is determined (the child has exited by itself, even if it
  // is not reaped yet), a cancellation has no effect on async_wait. async_wait_close stops
  // waiting for the streams then: it completes at once, or at the exit being reaped.
  if (!state->running() || !state->watcher || state->watcher->has_exited()) {
    if (!at_close)
      return;
    w->cancelled = true;
    // On the next turn, as cancel_read does: the completion clears the slot, so it must not
    // run inside the slot's own handler.
    if (state->exit_delivered)
      asio::post(state->executor, [state] { state->complete_close_waiters(true); });
    return;
  }
  w->cancelled = true;
  state->kill_by_library();
}

asio::any_io_executor state_executor(const child_state& state) {
  return state.executor;
}

} // namespace childproc::detail

namespace childproc {
inline namespace v1 {

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
  }
  return *this;
}

child_process::child_process(std::shared_ptr<detail::child_state> state) noexcept
    : state_(std::move(state)) {
  if (state_)
    ++state_->handles;
}

child_process::~child_process() {
  release();
}

void child_process::release() noexcept {
  if (!state_)
    return;
  if (state_->kill_on_destroy && state_->running())
    state_->kill_by_library();
  if (--state_->handles == 0 && state_->close_emitted)
    state_->error_handlers.release(); // nothing can report an error any more
  state_.reset();
}

const std::shared_ptr<detail::child_state>& child_process::checked_state() const {
  if (!state_)
    throw std::logic_error("childproc: empty child_process handle");
  return state_;
}

std::optional<pid_t> child_process::pid() const noexcept {
  if (!state_ || state_->pid <= 0 || state_->status)
    return std::nullopt;
  return state_->pid;
}

std::optional<pid_t> child_process::original_pid() const noexcept {
  if (!state_ || state_->pid <= 0)
    return std::nullopt;
  return state_->pid;
}

bool child_process::kill(int signal, std::error_code& ec) noexcept {
  ec.clear();
  if (!state_)
    return false;
  int err = state_->send_signal(signal);
  if (err == 0)
    return true;
  if (err != ESRCH) // a dead child is not an error (Node returns false)
    ec.assign(err, std::system_category());
  return false;
}

bool child_process::kill(int signal) {
  std::error_code ec;
  const bool delivered = kill(signal, ec);
  if (!ec)
    return delivered;
  process_error error(ec, "kill", state_->file, {});
  if (state_->error_handlers.empty())
    throw error;
  state_->emit_error(error);
  return false;
}

bool child_process::kill(std::string_view signal, std::error_code& ec) noexcept {
  const int number = signal_number(signal, ec);
  return !ec && kill(number, ec);
}

bool child_process::kill(std::string_view signal) {
  return kill(signal_number(signal)); // an unknown name throws, as Node's ERR_UNKNOWN_SIGNAL
}

bool child_process::killed() const noexcept {
  return state_ && state_->killed;
}

std::optional<int> child_process::exit_code() const noexcept {
  return state_ && state_->status ? state_->status->code : std::nullopt;
}

std::optional<int> child_process::signal_code() const noexcept {
  return state_ && state_->status ? state_->status->signal : std::nullopt;
}

std::optional<exit_status> child_process::status() const noexcept {
  return state_ ? state_->status : std::nullopt;
}

const std::string& child_process::spawn_file() const {
  return checked_state()->file;
}

const std::vector<std::string>& child_process::spawn_args() const {
  return checked_state()->args;
}

writable_stream& child_process::in() {
  auto& s = checked_state();
  if (!s->in)
    throw std::logic_error("childproc: stdin is not a pipe");
  return *s->in;
}

readable_stream& child_process::stdio(int n) {
  auto& s = checked_state();
  if (n < 1 || static_cast<std::size_t>(n) >= s->readers.size() || !s->readers[n])
    throw std::logic_error("childproc: stdio slot " + std::to_string(n) + " is not a pipe");
  return *s->readers[n];
}

readable_stream& child_process::out() {
  return stdio(1);
}
readable_stream& child_process::err() {
  return stdio(2);
}

int child_process::stdio_count() const noexcept {
  return state_ ? static_cast<int>(state_->readers.size()) : 0;
}

bool child_process::has_pipe(int n) const noexcept {
  if (!state_ || n < 0)
    return false;
  if (n == 0)
    return state_->in != nullptr;
  return static_cast<std::size_t>(n) < state_->readers.size() && state_->readers[n] != nullptr;
}

child_process& child_process::on_spawn(spawn_handler h) {
  checked_state()->spawn_handlers.add(std::move(h));
  return *this;
}
child_process& child_process::on_exit(exit_handler h) {
  checked_state()->exit_handlers.add(std::move(h));
  return *this;
}
child_process& child_process::on_close(exit_handler h) {
  checked_state()->close_handlers.add(std::move(h));
  return *this;
}
child_process& child_process::on_error(error_handler h) {
  checked_state()->error_handlers.add(std::move(h));
  return *this;
}

childproc::channel child_process::channel() const {
  auto& s = checked_state();
  if (!s->ipc)
    throw std::logic_error("childproc: this child has no IPC channel (use fork)");
  return childproc::channel(s->ipc);
}

bool child_process::has_channel() const noexcept {
  return state_ && state_->ipc;
}

bool child_process::send(const message& msg, send_handler done) {
  auto& s = checked_state();
  if (s->io_shut_down)
    return false; // inert: nothing can complete on a context that is gone
  if (s->ipc)
    return s->ipc->send(msg, std::move(done));
  // No channel at all: the same answer as a closed one, reported once.
  const auto ec = make_error_code(errc::channel_closed);
  if (done)
    asio::post(s->executor, [done = std::move(done), ec] { done(ec); });
  else
    asio::post(s->executor,
               [state = s, ec] { state->emit_error(process_error(ec, "send", state->file, {})); });
  return false;
}

void child_process::disconnect() {
  if (state_ && state_->ipc)
    state_->ipc->disconnect();
}

bool child_process::connected() const noexcept {
  return state_ && state_->ipc && state_->ipc->connected;
}

child_process& child_process::on_message(message_handler handler) {
  channel().on_message(std::move(handler));
  return *this;
}

child_process& child_process::on_disconnect(disconnect_handler handler) {
  channel().on_disconnect(std::move(handler));
  return *this;
}

child_process::executor_type child_process::get_executor() const {
  return checked_state()->executor;
}

} // namespace v1
} // namespace childproc
