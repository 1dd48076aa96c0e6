// remote: the pool's tasks on other hosts, through Redis Streams. A remote_pool adds each task
// to a Redis stream; `childproc-agent` processes on any number of hosts read it with a consumer
// group, run the tasks in their own local childproc::pool and write each result to the caller's
// reply stream. The completion is the local pool's, so switching is one line (docs/scale-out.md).
//
// Optional component: target childproc::remote, built when hiredis is found.
#pragma once

#include <childproc/detail/completion.hpp>
#include <childproc/executor.hpp>
#include <childproc/message.hpp>
#include <childproc/pool.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>

namespace childproc {
namespace detail {
struct remote_state;
} // namespace detail

inline namespace v1 {

/// The remote pool's own errors (category "childproc.remote"); a task's own failure keeps the
/// local pool's code (errc::task_failed, worker_died, timed_out, ...), as the agent saw it.
enum class remote_errc {
  /// The Redis server could not be reached (connect failed): the message says why.
  server_unreachable = 1,
  /// The connection to the server was lost: the task's XADD was unanswered, or no connection
  /// came back before its reply stream expired, or the run started while the pool was
  /// disconnected (it connects again by itself: remote_options::reconnect_delay).
  connection_lost,
  /// The server answered a command with an error (the message is the server's).
  server_error,
  /// The task's payload, or its result's, is larger than remote_options::max_payload (or than
  /// the agent's --max-payload).
  payload_too_large,
  /// The server refused the credentials (AUTH).
  auth_failed,
  /// The task was delivered more than the agents' --max-attempts times without a result (its
  /// agents died holding it): it was moved to the dead-letter stream "<stream>:dead".
  dead_lettered,
  /// The reply stream was gone from the server while the task was in flight (it expired while
  /// the caller's loop was stalled for longer than reply_expiry, or the server lost it): its
  /// result may have been dropped. The pool creates the stream again; later runs are unaffected.
  reply_stream_lost,
};

/// The category of remote_errc.
const std::error_category& remote_category() noexcept;

inline std::error_code make_error_code(remote_errc e) noexcept {
  return {static_cast<int>(e), remote_category()};
}

struct remote_options {
  /// The Redis server: a unix socket path (it starts with '/'), or "host:port". Required.
  std::string server{};
  /// The task stream the agents read (their --stream). Default: "childproc:tasks".
  std::string stream = "childproc:tasks";
  /// The agents' consumer group (their --group); created at the stream's start if missing.
  /// Default: "childproc".
  std::string group = "childproc";
  /// A task larger than this fails with remote_errc::payload_too_large before it is sent, and
  /// so does a run whose result, read from the reply stream, is larger (the agents have their
  /// own --max-payload, which may be larger). Default: 64 MiB.
  std::size_t max_payload = 64 * 1024 * 1024;
  /// The credentials, sent as the first command of each connection: `AUTH user password` (a
  /// Redis 6 ACL user), or `AUTH password` (requirepass) when `user` is empty; nothing is sent
  /// when `password` is empty. Refused credentials, or none where the server requires them,
  /// fail the runs with remote_errc::auth_failed.
  std::string user{};
  std::string password{};
  /// The reply stream's expiry: it is renewed every third of it while the pool lives, so the
  /// stream of a caller that died without destroy() is deleted by the server after at most
  /// this. From one second to 24 hours (the constructor throws errc::invalid_argument outside
  /// them). Default: one minute.
  std::chrono::milliseconds reply_expiry = std::chrono::minutes(1);
  /// After the connection to the server is lost (or the first connect fails), the pool
  /// connects again after this delay, doubled after each failed attempt up to
  /// max_reconnect_delay (each wait drawn between half the delay and the delay, so that many
  /// callers do not come back in step). While it is disconnected, new runs fail at once with
  /// remote_errc::connection_lost or server_unreachable (nothing is queued: retry in the
  /// caller); runs whose task the server had taken wait for their results, which the reply
  /// stream keeps, for as long as that stream's expiry allows (see docs/scale-out.md). Zero:
  /// never connect again (the first lost connection fails every later run). Refused
  /// credentials are never retried. The constructor throws errc::invalid_argument for a
  /// negative delay or a max_reconnect_delay smaller than reconnect_delay. Default: 100 ms.
  std::chrono::milliseconds reconnect_delay = std::chrono::milliseconds(100);
  /// The longest wait between two attempts to connect again: at least reconnect_delay, at
  /// most an hour (the constructor throws errc::invalid_argument otherwise); unused when
  /// reconnect_delay is zero. Runs held across a loss wait for reply_expiry at most, so a value
  /// near or above it lets them fail before the next attempt. Default: 5 s.
  std::chrono::milliseconds max_reconnect_delay = std::chrono::seconds(5);
};

struct remote_stats {
  std::uint64_t completed = 0; ///< tasks that completed successfully
  std::uint64_t failed = 0;    ///< tasks that completed with an error (cancelled ones included)
  std::size_t in_flight = 0;   ///< tasks sent and not answered yet
  /// Replies that matched no task in flight (a task answered twice, or after it was cancelled).
  std::uint64_t stray_replies = 0;
  /// Times the pool connected again after its connection was lost (or its first connect failed)
  /// and the server answered.
  std::uint64_t reconnects = 0;
};

/// A pool whose workers are `childproc-agent` processes reached through a Redis server.
///
/// async_run(task, [options,] token) completes with void(boost::system::error_code, message), as
/// childproc::pool's: the worker's result, or the local pool's error as the agent's pool reported
/// it (errc::task_failed with the worker's error message, worker_died, timed_out, unknown_task),
/// or remote_errc::server_unreachable / connection_lost / server_error / payload_too_large /
/// auth_failed / dead_lettered / reply_stream_lost, errc::pool_closed after destroy(),
/// asio::error::operation_aborted when cancelled (at once; the agent running the task is told to
/// cancel it, and writes no result). Completions never run inside async_run. run_options's
/// name, timeout (applied by the agent's pool) and on_progress (forwarded through the reply
/// stream, before the completion) have their local meaning.
///
/// Each remote_pool has its own reply stream (removed by destroy()). Use it from its executor's
/// thread; its Redis connections are driven by that executor (no thread of its own).
class remote_pool {
public:
  explicit remote_pool(const boost::asio::any_io_executor& ex, remote_options options);
  template <executor_or_context Target>
  explicit remote_pool(Target& target, remote_options options)
      : remote_pool(detail::executor_of(target), std::move(options)) {}
  remote_pool(remote_pool&&) noexcept;
  remote_pool& operator=(remote_pool&&) noexcept;
  ~remote_pool();

  template <class Token>
  auto async_run(message task, run_options options, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, message)>(
        [this](auto handler, message task, run_options options) {
          start_run(std::move(task), std::move(options),
                    detail::make_completion<boost::system::error_code, message>(std::move(handler),
                                                                                executor()));
        },
        token, std::move(task), std::move(options));
  }
  template <class Token>
  auto async_run(message task, Token&& token) {
    return async_run(std::move(task), run_options{}, std::forward<Token>(token));
  }
  template <class T, class Token>
  requires(!std::is_convertible_v<const T&, message>) auto async_run(const T& task,
                                                                     run_options options,
                                                                     Token&& token) {
    return async_run(message::from(task), std::move(options), std::forward<Token>(token));
  }

  /// Fails every task in flight with errc::pool_closed, removes the reply stream and closes the
  /// connections. The destructor calls it.
  void destroy();

  remote_stats stats() const;
  /// This pool's reply stream (the agents write the results there).
  const std::string& reply_stream() const noexcept;
  boost::asio::any_io_executor executor() const noexcept;

private:
  void start_run(message task, run_options options,
                 std::unique_ptr<detail::completion<boost::system::error_code, message>> done);
  std::shared_ptr<detail::remote_state> state_;
};

} // namespace v1
} // namespace childproc

template <>
struct std::is_error_code_enum<childproc::remote_errc> : std::true_type {};
