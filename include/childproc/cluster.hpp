// cluster: Node's cluster module and PM2's cluster mode for Asio servers. A primary forks worker
// processes (the current binary by default) that all serve one TCP endpoint; the primary
// supervises them (restart with backoff, memory limit, rolling reload, graceful shutdown).
//
//   if (childproc::cluster::is_worker()) {           // a worker: serve
//     auto listener = childproc::cluster::listen(io, endpoint);
//     ... co_await listener.async_accept(asio::use_awaitable) ...
//   } else {                                          // the primary: supervise
//     childproc::cluster primary(io, {.endpoint = endpoint});
//     primary.start();
//   }
#pragma once

#include <childproc/channel.hpp>
#include <childproc/child_process.hpp>
#include <childproc/detail/completion.hpp>
#include <childproc/executor.hpp>
#include <childproc/message.hpp>
#include <childproc/options.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <system_error>
#include <vector>

namespace childproc {
namespace detail {
struct cluster_state;
struct cluster_worker_state;
struct cluster_listener_state;
} // namespace detail

inline namespace v1 {

/// How connections reach the workers.
enum class scheduling {
  /// The primary creates the listening socket and hands it to every worker at launch; each
  /// worker accepts on it (Node's SCHED_NONE). One accept queue: a worker that stops accepting
  /// leaves its connections to the others, so a rolling reload loses none. The kernel wakes
  /// whichever worker is waiting, which may be uneven (Node's documented complaint).
  shared,
  /// Each worker binds its own socket to the endpoint with SO_REUSEPORT and the kernel spreads
  /// connections over them by a hash of the client's address (Node 22's reusePort). The primary
  /// holds a bound, non-listening socket so that every worker gets the same port (port 0 too).
  /// Each socket has its own accept queue: connections queued on a worker's socket in the instant
  /// it closes are reset, unless net.ipv4.tcp_migrate_req is 1.
  reuse_port,
  /// Node's default on Linux (SCHED_RR): the primary accepts and hands each connection over a
  /// worker's channel to a free worker, one connection in flight per worker (the next one after
  /// the worker acknowledged the last). An even spread of connections whatever the kernel does;
  /// the primary moves every connection (one descriptor pass each). A worker that stops leaves
  /// the waiting connections to the others.
  round_robin,
};

/// Options of a cluster: aggregates for designated initializers.
struct cluster_options {
  /// Worker processes kept running. Default: nullopt, the number of CPUs. 0 is invalid_argument.
  std::optional<std::size_t> workers{};
  /// The worker program. Default: empty, the current binary (self_exe()).
  std::string program{};
  /// The worker's arguments. Default: nullopt, this process's own arguments (argv[1..], as Node's
  /// cluster.settings.args), so that `server --port 8080` forks `server --port 8080`.
  std::optional<std::vector<std::string>> args{};
  /// How the workers are started (fork()'s options: env, cwd, stdio, ...). The cluster adds its
  /// variables to env_overrides and, for scheduling::shared, one stdio slot after the given
  /// ones. Default: fork()'s defaults (stdio inherited).
  fork_options worker_options{};
  /// See scheduling. Default: round_robin, Node's on Linux (SCHED_RR). A server that blocks its
  /// event loop in a handler should ask for shared: a busy worker then takes no new connection.
  childproc::scheduling scheduling = childproc::scheduling::round_robin;
  /// The endpoint the workers serve; cluster::listen in a worker must name it (or its port 0
  /// may be the port it was given). Default: 0.0.0.0 port 0 (a port chosen at start()).
  boost::asio::ip::tcp::endpoint endpoint{boost::asio::ip::tcp::v4(), 0};
  /// The listen backlog. Default: 511 (Node's). Under round_robin also the most connections
  /// the primary holds while no worker is free (the rest wait in the kernel's queue).
  int backlog = 511;

  /// Supervision (PM2's). Restart a worker that exits without having been disconnected or
  /// killed through the cluster. Default: true (PM2's autorestart; Node restarts nothing).
  bool autorestart = true;
  /// A worker that ran less than this counts as unstable. Default: 1 s (PM2's).
  std::chrono::milliseconds min_uptime{1000};
  /// Unstable exits in a row a worker slot may restart after; the next one ends the slot with
  /// the give_up event. Default: 16 (PM2's).
  std::size_t max_restarts = 16;
  /// The delay before the first restart; each further restart in a row waits 1.5 times longer
  /// (PM2's exp_backoff_restart_delay), up to restart_backoff_max. 0 restarts at once.
  /// Default: 100 ms (PM2's is 0, off; a crash loop without a delay only burns CPU).
  std::chrono::milliseconds restart_backoff{100};
  /// The longest backoff. Default: 15 s (PM2's).
  std::chrono::milliseconds restart_backoff_max{15000};
  /// A worker up this long resets its slot's backoff. Default: 30 s (PM2's).
  std::chrono::milliseconds backoff_reset_after{30000};
  /// A worker whose resident set is above this many bytes is replaced as in a reload (the new
  /// one listens before the old one is disconnected). Default: 0, no limit.
  std::size_t max_memory_restart = 0;
  /// How often the workers' resident sets are read. Default: 30 s (PM2's WORKER_INTERVAL).
  std::chrono::milliseconds memory_check_interval{30000};
  /// After a disconnect (reload, shutdown, worker.disconnect()), how long a worker may take to
  /// finish its connections and exit before it gets SIGKILL. Default: 1600 ms (PM2's).
  std::chrono::milliseconds kill_timeout{1600};
  /// How long a new worker may take to report `listening` in a reload before the reload fails
  /// (the new worker is killed, the old one kept). Default: 3 s (PM2's listen_timeout value;
  /// PM2 takes a worker that timed out as ready and goes on, this cluster keeps the old one).
  std::chrono::milliseconds listen_timeout{3000};
};

class cluster;

/// A worker process of a cluster, seen from the primary (Node's Worker): a shared handle.
class cluster_worker {
public:
  cluster_worker() noexcept = default;
  explicit cluster_worker(std::shared_ptr<detail::cluster_worker_state> state) noexcept
      : state_(std::move(state)) {}
  explicit operator bool() const noexcept { return state_ != nullptr; }

  /// 1, 2, ... in fork order, never reused (a restarted worker gets a new id), as Node's.
  unsigned id() const noexcept;
  /// The worker's place in the cluster, 0 .. workers-1; its restarts and replacements keep it
  /// (PM2's NODE_APP_INSTANCE, given to the worker as CHILDPROC_CLUSTER_INSTANCE).
  std::size_t slot() const noexcept;
  /// The pid, also after the worker was reaped; empty if the launch failed.
  std::optional<pid_t> pid() const noexcept;
  /// The process (fork()'s handle).
  child_process& process() const;

  /// Sends a user message (the worker reads it from cluster::channel()). Returns what
  /// channel::send returns.
  bool send(const message& msg, send_handler done = {}) const;
  /// Disconnects the worker: it stops accepting, finishes its connections and exits; after
  /// kill_timeout it gets SIGKILL. Sets exited_after_disconnect, so it is not restarted.
  void disconnect() const;
  /// Signals the worker (Node's worker.kill: the channel is closed and the signal sent at once);
  /// it is not restarted. Returns false when it had already ended.
  bool kill(int signal = SIGTERM) const;

  bool is_connected() const noexcept;
  bool is_dead() const noexcept;
  /// True when the worker ended after disconnect() or kill() through the cluster (or a reload,
  /// a shutdown): Node's exitedAfterDisconnect.
  bool exited_after_disconnect() const noexcept;
  /// True once it reported `listening`.
  bool is_listening() const noexcept;

  friend bool operator==(const cluster_worker& a, const cluster_worker& b) noexcept {
    return a.state_ == b.state_;
  }

private:
  std::shared_ptr<detail::cluster_worker_state> state_;
};

/// What cluster::listen returns: an acceptor whose async_accept yields a connected tcp::socket
/// whatever the scheduling, so a server is written once (outside a cluster it is a plain
/// listening socket on the endpoint).
class cluster_listener {
public:
  using executor_type = boost::asio::any_io_executor;
  using socket_type = boost::asio::ip::tcp::socket;

  cluster_listener() noexcept = default;
  explicit cluster_listener(std::shared_ptr<detail::cluster_listener_state> state) noexcept
      : state_(std::move(state)) {}

  /// Completion: void(boost::system::error_code, tcp::socket). Fails with
  /// asio::error::operation_aborted once the listener was closed (close(), or the primary
  /// disconnected this worker). Cancellation aborts the accept. The operation holds the
  /// listener's state, not this handle: a deferred accept may outlive a moved handle.
  template <class Token>
  auto async_accept(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, socket_type)>(
        [state = state_](auto handler) {
          auto ex = executor_of(state);
          start_accept(state, detail::make_completion<boost::system::error_code, socket_type>(
                                  std::move(handler), ex));
        },
        token);
  }
  /// The address it serves (the port actually bound).
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  /// False once closed: sessions should then end their keep-alive connections after the
  /// current response, so that the worker can exit.
  bool is_open() const noexcept;
  /// Stops accepting (a pending async_accept fails with operation_aborted).
  void close();
  executor_type get_executor() const;

private:
  static executor_type executor_of(const std::shared_ptr<detail::cluster_listener_state>& state);
  static void
  start_accept(const std::shared_ptr<detail::cluster_listener_state>& state,
               std::unique_ptr<detail::completion<boost::system::error_code, socket_type>> done);
  std::shared_ptr<detail::cluster_listener_state> state_;
};

/// The primary of a cluster (and, through its static members, the worker's view of it).
///
/// Events (handlers run on the cluster's executor, never inside start() or another call):
/// `fork(worker)`, `online(worker)` (the worker took its channel), `listening(worker, endpoint)`,
/// `message(worker, msg)` (user messages only: the cluster's own, objects with a "cc" member,
/// are not delivered), `disconnect(worker)`, `exit(worker, code, signal)`, and
/// `give_up(worker, restarts)` when a slot exited unstably more than max_restarts times in a
/// row and is not restarted any more.
///
/// `exit` comes at the worker's exit (Node's), after `fork` also for a launch that failed.
///
/// Lifetime: the handle owns the cluster. Destroying it (or assigning over it) without
/// async_shutdown() kills every worker (SIGKILL) and aborts a reload (operation_aborted). Use it
/// from its executor's thread.
class cluster {
public:
  using worker_handler = std::function<void(const cluster_worker& worker)>;

  explicit cluster(const boost::asio::any_io_executor& ex, cluster_options options = {});
  template <executor_or_context Target>
  explicit cluster(Target& target, cluster_options options = {})
      : cluster(detail::executor_of(target), std::move(options)) {}
  cluster(cluster&&) noexcept;
  cluster& operator=(cluster&&) noexcept;
  ~cluster();

  /// Opens the endpoint and forks the workers. Throws std::system_error (invalid options, a
  /// bind that fails, a launch that fork() refuses: the workers already launched are killed), or
  /// sets `ec`. A second start(), or one after async_shutdown(), is errc::invalid_argument and
  /// changes nothing.
  void start();
  void start(std::error_code& ec);

  /// The endpoint the workers serve, with the port chosen (after start()).
  boost::asio::ip::tcp::endpoint endpoint() const;
  /// The workers that are running or still connected (Node's cluster.workers), by id.
  std::vector<cluster_worker> workers() const;

  /// Rolling reload: replaces the workers one at a time; each new one must report `listening`
  /// before the old one is disconnected, and the old one finishes its connections (kill_timeout,
  /// then SIGKILL). Completion: void(boost::system::error_code): success, errc::timed_out when a
  /// new worker did not listen within listen_timeout, errc::worker_start_failed when it exited
  /// first, the launch's own error when fork() refused it (the old workers of the remaining slots
  /// are kept then), or errc::invalid_argument when a reload or shutdown is already under way. Like
  /// async_shutdown, the operation holds the cluster's state, not this handle (a deferred operation
  /// may outlive a moved handle).
  template <class Token>
  auto async_reload(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [state = state_](auto handler) {
          start_reload(state, detail::make_completion<boost::system::error_code>(
                                  std::move(handler), executor_of(state)));
        },
        token);
  }
  /// Graceful shutdown: no more restarts; every worker is disconnected, finishes its
  /// connections and exits (SIGKILL after kill_timeout); completes once all are reaped.
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [state = state_](auto handler) {
          start_shutdown(state, detail::make_completion<boost::system::error_code>(
                                    std::move(handler), executor_of(state)));
        },
        token);
  }

  cluster& on_fork(worker_handler handler);
  cluster& on_online(worker_handler handler);
  cluster& on_listening(
      std::function<void(const cluster_worker&, const boost::asio::ip::tcp::endpoint&)> handler);
  cluster& on_message(std::function<void(const cluster_worker&, const message&)> handler);
  cluster& on_disconnect(worker_handler handler);
  cluster& on_exit(
      std::function<void(const cluster_worker&, std::optional<int> code, std::optional<int> signal)>
          handler);
  cluster&
  on_give_up(std::function<void(const cluster_worker& last, std::size_t restarts)> handler);
  /// A worker's process error (Node's worker 'error'): its launch failed (a missing program: its
  /// `exit` follows, code -errno), a restart that fork() refused (no `fork` nor `exit` then: that
  /// worker never existed), or an error of its channel.
  cluster& on_error(std::function<void(const cluster_worker&, std::error_code ec)> handler);

  boost::asio::any_io_executor executor() const noexcept;

  // ---- the worker's side ----

  /// True in a process started as a cluster worker (CHILDPROC_CLUSTER_WORKER set at start-up).
  static bool is_worker() noexcept;
  static bool is_primary() noexcept { return !is_worker(); }
  /// This worker's id (1, 2, ...); 0 in the primary.
  static unsigned worker_id() noexcept;
  /// The worker's channel to the primary (taken on the first call, which reports `online`).
  /// The cluster's own messages (objects with a "cc" member) arrive on it too: ignore them.
  /// Throws std::system_error (errc::channel_closed) outside a worker.
  static childproc::channel channel(const boost::asio::any_io_executor& ex);
  template <executor_or_context Target>
  static childproc::channel channel(Target& target) {
    return channel(detail::executor_of(target));
  }
  /// In a worker: serves the cluster's endpoint under its scheduling (`endpoint` must name the
  /// cluster's: errc::invalid_argument otherwise) and reports `listening`; when the primary
  /// disconnects the worker, the listener closes. Outside a cluster: a listening socket on
  /// `endpoint` (SO_REUSEADDR), so the same server runs alone. Throws std::system_error, or
  /// sets `ec`. Not for concurrent calls (nor with channel()): listen before other threads run
  /// the io_context.
  static cluster_listener listen(const boost::asio::any_io_executor& ex,
                                 const boost::asio::ip::tcp::endpoint& endpoint);
  static cluster_listener listen(const boost::asio::any_io_executor& ex,
                                 const boost::asio::ip::tcp::endpoint& endpoint,
                                 std::error_code& ec);
  template <executor_or_context Target>
  static cluster_listener listen(Target& target, const boost::asio::ip::tcp::endpoint& endpoint) {
    return listen(detail::executor_of(target), endpoint);
  }

private:
  using state_ptr = std::shared_ptr<detail::cluster_state>;
  using done_ptr = std::unique_ptr<detail::completion<boost::system::error_code>>;
  static boost::asio::any_io_executor executor_of(const state_ptr& state) noexcept;
  static void start_reload(const state_ptr& state, done_ptr done);
  static void start_shutdown(const state_ptr& state, done_ptr done);
  void release() noexcept;
  std::shared_ptr<detail::cluster_state> state_;
};

} // namespace v1
} // namespace childproc
