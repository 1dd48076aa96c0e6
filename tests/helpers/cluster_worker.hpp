// The helper's cluster-worker mode: a small HTTP/1.1 server on cluster::listen, answering every
// request with its pid (keep-alive until the listener closes). Routes:
//   /            the pid
//   /block/MS    sleeps MS milliseconds (blocking the worker), then the pid
//   /leak/MB     allocates and touches MB MiB kept until exit, then the pid
//   /exit        exits with code 1 at once, without answering
// and sends back every user message of its channel but {"disconnect-self": MS} (below);
// {"close-listener": true} closes its listener first, {"drop-listener": true} drops it without
// close(), {"relisten": true} closes it and listens again at once.
#pragma once

#include <childproc/cluster.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace cluster_worker {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct session : std::enable_shared_from_this<session> {
  session(tcp::socket s, childproc::cluster_listener& l) : socket(std::move(s)), listener(l) {}
  tcp::socket socket;
  childproc::cluster_listener& listener;
  asio::streambuf in;
  std::string reply;

  void read() {
    asio::async_read_until(
        socket, in, "\r\n\r\n",
        [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
          if (!ec)
            self->answer(n);
        });
  }
  void answer(std::size_t n) {
    std::string head(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + n);
    in.consume(n);
    const auto space = head.find(' ');
    const std::string path = head.substr(space + 1, head.find(' ', space + 1) - space - 1);
    if (path == "/exit")
      ::_exit(1);
    if (path.rfind("/block/", 0) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(path.c_str() + 7)));
    if (path.rfind("/leak/", 0) == 0) {
      const std::size_t bytes = std::size_t(std::atoi(path.c_str() + 6)) << 20;
      // Kept until exit (that is the point), reachable so that LeakSanitizer does not count it.
      static std::vector<std::unique_ptr<char[]>> hoard;
      hoard.emplace_back(new char[bytes]);
      std::memset(hoard.back().get(), 1, bytes);
    }
    const bool keep = listener.is_open() && head.find("Connection: close") == std::string::npos;
    const std::string body = std::to_string(::getpid());
    reply = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\nConnection: " + (keep ? "keep-alive" : "close") + "\r\n\r\n" + body;
    asio::async_write(socket, asio::buffer(reply),
                      [self = shared_from_this(), keep](boost::system::error_code ec, std::size_t) {
                        if (!ec && keep)
                          self->read();
                        else {
                          boost::system::error_code ignored;
                          self->socket.shutdown(tcp::socket::shutdown_send, ignored);
                        }
                      });
  }
};

inline void accept(childproc::cluster_listener& listener) {
  listener.async_accept([&listener](boost::system::error_code ec, tcp::socket socket) {
    if (ec)
      return; // closed: the primary disconnected us
    std::make_shared<session>(std::move(socket), listener)->read();
    accept(listener);
  });
}

// argv: ADDRESS PORT; `threads` run the io_context (a server on several threads: the
// listener and the channel meet across them).
inline int serve(const char* address, const char* port, int threads = 1) {
  asio::io_context io;
  const tcp::endpoint endpoint(asio::ip::make_address(address),
                               static_cast<unsigned short>(std::atoi(port)));
  auto listener = childproc::cluster::listen(io, endpoint);
  accept(listener);
  // User messages come back as they are; the cluster's own ({"cc": ...}) are not answered.
  // {"disconnect-self": MS} disconnects the channel from this side (Node's process.disconnect()
  // in a worker) and keeps the process alive MS milliseconds more.
  auto primary = childproc::cluster::channel(io);
  asio::steady_timer hold(io);
  primary.on_message(
      [primary, &hold, &listener, &io, endpoint](const childproc::message& m) mutable {
        const auto* o = m.is_json() && m.json().is_object() ? &m.json().as_object() : nullptr;
        if (o && o->contains("close-listener"))
          listener.close(); // and sent back, as any user message
        if (o && o->contains("drop-listener"))
          listener = childproc::cluster_listener{}; // without close()
        if (o && o->contains("relisten")) {
          listener.close();
          listener = childproc::cluster::listen(io, endpoint);
          accept(listener);
        }
        if (o && o->contains("disconnect-self")) {
          hold.expires_after(std::chrono::milliseconds(o->at("disconnect-self").to_number<int>()));
          hold.async_wait([](boost::system::error_code) {});
          return primary.disconnect();
        }
        if (!(o && o->contains("cc")))
          primary.send(m);
      });
  std::vector<std::thread> more;
  for (int i = 1; i < threads; ++i)
    more.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : more)
    t.join();
  return 0;
}

// The first start serves; later ones (FILE exists) are online but never listen.
inline int serve_once(const char* file, const char* address, const char* port) {
  if (std::FILE* f = std::fopen(file, "wx")) {
    std::fclose(f);
    return serve(address, port);
  }
  asio::io_context io;
  childproc::cluster::channel(io);
  io.run(); // until the primary disconnects (or kills) this worker
  return 0;
}

} // namespace cluster_worker
