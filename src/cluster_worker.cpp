// The worker's side of a cluster: is_worker(), its channel, listen() and cluster_listener.
#include "channel_state.hpp"
#include "cluster_scheduling.hpp"

#include <childproc/error.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/object.hpp>

#include <algorithm>
#include <mutex>
#include <unistd.h>
#include <utility>
#include <vector>

namespace childproc {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// The listeners of this worker, stopped when the primary disconnects it, and (shared) the
// listening socket it inherited, which each listener copies.
struct worker_registry {
  std::mutex mutex;
  bool channel_hooked = false;
  bool disconnected = false;
  int inherited_socket = detail::worker_env().listen_fd;
  std::vector<std::weak_ptr<detail::cluster_listener_state>> listeners;
  std::weak_ptr<detail::channel_state> channel; // to the primary, once cluster::channel made it

  void stop_all() {
    std::vector<std::shared_ptr<detail::cluster_listener_state>> live;
    {
      std::lock_guard lock(mutex);
      disconnected = true;
      // A worker that drains its connections (its primary gone, maybe) must not keep the port.
      if (inherited_socket >= 0)
        ::close(std::exchange(inherited_socket, -1));
      for (auto& weak : listeners)
        if (auto l = weak.lock())
          live.push_back(std::move(l));
      listeners.clear();
    }
    for (auto& l : live)
      l->stop();
  }

  // round_robin: a connection from the primary goes to the first listener that takes it; the
  // answer (Node's `accepted`) frees this worker for the next one. One that no listener takes
  // (all closed) goes back: the primary kept its own copy and hands it to another worker.
  void handed_over(const message& m, childproc::channel& primary) {
    auto fd = m.take_handle();
    bool taken = false;
    for (auto& l : live_listeners())
      if ((taken = l->take(fd)))
        break;
    // Not taken: the primary hands it to another worker (this copy closes here).
    primary.send(
        message(boost::json::value(boost::json::object{{"cc", "accepted"}, {"taken", taken}})));
  }

  // round_robin: the user closed a listener; once none is open the primary is told to hand
  // this worker no more connections (Node's `close`).
  void listener_closed() {
    for (auto& l : live_listeners())
      if (l->is_open())
        return;
    send_in_order(detail::control_message("close"));
  }

  // Sends a control message from the channel's strand, where the connections' answers go
  // from: "close" and a later "listening" keep their order whatever thread asks.
  void send_in_order(message m) {
    std::weak_ptr<detail::channel_state> weak;
    {
      std::lock_guard lock(mutex);
      weak = channel;
    }
    if (auto state = weak.lock())
      asio::post(detail::channel_executor(*state), [weak, m = std::move(m)] {
        if (auto state = weak.lock(); state) {
          childproc::channel ch(std::move(state));
          if (ch.connected())
            ch.send(m);
        }
      });
  }

  std::vector<std::shared_ptr<detail::cluster_listener_state>> live_listeners() {
    std::vector<std::shared_ptr<detail::cluster_listener_state>> live;
    std::lock_guard lock(mutex);
    for (auto& weak : listeners)
      if (auto l = weak.lock())
        live.push_back(std::move(l));
    return live;
  }
};

worker_registry& registry() {
  static worker_registry r;
  return r;
}

bool is_control(const message& m, const char* kind) {
  if (!m.is_json() || !m.json().is_object())
    return false;
  const auto* cc = m.json().as_object().if_contains("cc");
  return cc && cc->is_string() && cc->get_string() == kind;
}

} // namespace

inline namespace v1 {

bool cluster::is_worker() noexcept {
  return detail::worker_env().is_worker;
}

unsigned cluster::worker_id() noexcept {
  return detail::worker_env().id;
}

childproc::channel cluster::channel(const asio::any_io_executor& ex) {
  if (!is_worker())
    throw std::system_error(make_error_code(errc::channel_closed),
                            "childproc: cluster::channel outside a cluster worker");
  // On a strand: with io.run() on several threads the channel's own handlers (and the
  // handover of connections) must not run at once.
  auto ch = parent_channel(asio::make_strand(ex));
  auto& r = registry();
  bool first = false;
  {
    std::lock_guard lock(r.mutex);
    first = !std::exchange(r.channel_hooked, true);
    if (first)
      r.channel = detail::channel_access::weak(ch);
  }
  if (first) {
    // The primary disconnecting this worker (or dying) stops its listeners: the worker then
    // ends once its connections have.
    ch.on_disconnect([] { registry().stop_all(); });
    ch.on_message([](const message& m, childproc::channel primary) {
      if (is_control(m, "conn"))
        registry().handed_over(m, primary);
    });
    ch.send(detail::control_message("online"));
  }
  return ch;
}

cluster_listener cluster::listen(const asio::any_io_executor& ex, const tcp::endpoint& endpoint) {
  std::error_code ec;
  auto listener = listen(ex, endpoint, ec);
  if (ec)
    throw std::system_error(ec, "childproc: cluster::listen");
  return listener;
}

cluster_listener cluster::listen(const asio::any_io_executor& ex, const tcp::endpoint& endpoint,
                                 std::error_code& ec) {
  ec.clear();
  auto env = detail::worker_env();
  if (!env.is_worker)
    return cluster_listener(detail::open_listener(ex, env, endpoint, ec));
  channel(ex); // its first use reports "online", before this "listening"
  auto& r = registry();
  std::shared_ptr<detail::cluster_listener_state> state;
  {
    std::lock_guard lock(r.mutex); // stop_all() may close the inherited socket meanwhile
    env.listen_fd = r.inherited_socket;
    if (r.disconnected)
      state = detail::closed_listener(ex);
    else if ((state = detail::open_listener(ex, env, endpoint, ec)))
      r.listeners.push_back(state);
  }
  if (state)
    state->on_close([] { registry().listener_closed(); });
  if (ec)
    return {};
  const auto local = state->local_endpoint();
  r.send_in_order(message(boost::json::value(boost::json::object{
      {"cc", "listening"}, {"address", local.address().to_string()}, {"port", local.port()}})));
  return cluster_listener(std::move(state));
}

void cluster_listener::start_accept(
    const std::shared_ptr<detail::cluster_listener_state>& state,
    std::unique_ptr<detail::completion<boost::system::error_code, socket_type>> done) {
  state->accept(std::move(done)); // executor_of() threw for an empty listener
}

tcp::endpoint cluster_listener::local_endpoint() const {
  return state_ ? state_->local_endpoint() : tcp::endpoint{};
}

bool cluster_listener::is_open() const noexcept {
  return state_ && state_->is_open();
}

void cluster_listener::close() {
  if (state_)
    state_->close();
}

cluster_listener::executor_type cluster_listener::get_executor() const {
  return executor_of(state_);
}

cluster_listener::executor_type
cluster_listener::executor_of(const std::shared_ptr<detail::cluster_listener_state>& state) {
  if (!state)
    throw std::logic_error("childproc: empty cluster_listener");
  return state->executor();
}

} // namespace v1
} // namespace childproc
