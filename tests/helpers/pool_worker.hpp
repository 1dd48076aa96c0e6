// The pool's test worker (helper modes pool-worker*): the tasks that the pool's tests and
// test_serve.cpp send, served with childproc::serve().
#pragma once

#include <childproc/channel.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

// The pool's test worker: the tasks the pool tests and test_serve.cpp send.
namespace pool_worker {

inline childproc::message worker_data;
inline boost::json::array broadcasts;
inline std::vector<std::vector<char>> kept; // "alloc": memory the worker holds on to

inline std::int64_t resident_mib() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

inline std::int64_t int_of(const childproc::message& m) {
  return m.json().to_number<std::int64_t>();
}

inline childproc::message sync_sleep(const childproc::message& m) {
  std::this_thread::sleep_for(std::chrono::milliseconds(int_of(m)));
  return m;
}

inline boost::asio::awaitable<childproc::message> async_sleep(childproc::message m,
                                                              childproc::task_context) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor,
                                  std::chrono::milliseconds(int_of(m)));
  co_await timer.async_wait(boost::asio::use_awaitable);
  co_return m;
}

inline childproc::message cancellable(const childproc::message&, childproc::task_context& context) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < give_up) {
    if (context.cancelled())
      return "cancelled";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return "not cancelled";
}

inline childproc::message alloc(const childproc::message& m) {
  const std::size_t bytes = static_cast<std::size_t>(int_of(m)) * 1024 * 1024;
  std::vector<char> block(bytes);
  for (std::size_t i = 0; i < bytes; i += 4096)
    block[i] = 1; // touched: resident, not only reserved
  kept.push_back(std::move(block));
  return boost::json::value(resident_mib());
}

inline childproc::task_table tasks(boost::asio::io_context& io) {
  using childproc::message;
  childproc::task_table table;
  table.emplace("", [](const message& m) { return m; });
  table.emplace("sum", [](const message& m) {
    return message(
        boost::json::value(int_of(message(m.json().at("a"))) + int_of(message(m.json().at("b")))));
  });
  table.emplace("pid", [](const message&) { return message(boost::json::value(::getpid())); });
  table.emplace("sleep", sync_sleep);
  table.emplace("async_sleep", async_sleep);
  table.emplace("exit", [](const message& m) -> message { ::_exit(static_cast<int>(int_of(m))); });
  table.emplace("signal", [](const message& m) {
    const int sig = static_cast<int>(int_of(m));
    std::signal(sig, SIG_DFL);
    ::raise(sig);
    return message();
  });
  table.emplace("ignore_term", [](const message& m) { // ignores SIGTERM, then sleeps m ms
    std::signal(SIGTERM, SIG_IGN);
    return sync_sleep(m);
  });
  table.emplace("throw", [](const message& m) -> message {
    throw std::runtime_error(std::string(m.json().as_string()));
  });
  table.emplace("throw_int", [](const message&) -> message { throw 42; });
  table.emplace("progress", [](const message& m, childproc::task_context& context) {
    for (std::int64_t i = 0; i < int_of(m); ++i)
      context.progress(boost::json::value(i));
    return message("done");
  });
  table.emplace("cancellable", cancellable);
  table.emplace("ignore_cancel", sync_sleep);
  table.emplace("garbage", [&io](const message&) {
    childproc::parent_channel(io).send(message(boost::json::value(42)));
    return message();
  });
  table.emplace("wrong_id", [&io](const message&, childproc::task_context& context) {
    childproc::parent_channel(io).send(
        boost::json::value{{"cp", "done"}, {"id", context.id() + 1000000}, {"data", nullptr}});
    return message();
  });
  table.emplace("alloc", alloc);
  table.emplace("grow", [](const message& m) { // N bytes back for a small task
    return message::bytes(std::string(static_cast<std::size_t>(int_of(m)), 'g'));
  });
  table.emplace("reverse", [](const message& m) {
    return message::bytes(std::string(m.bytes().rbegin(), m.bytes().rend()));
  });
  table.emplace("worker_data", [](const message&) { return worker_data; });
  table.emplace("broadcasts", [](const message&) { return message(broadcasts); });
  table.emplace("env", [](const message& m) {
    const char* value = std::getenv(std::string(m.json().as_string()).c_str());
    return value ? message(value) : message();
  });
  return table;
}

inline int serve(bool init_throws) {
  boost::asio::io_context io;
  childproc::serve_options options;
  options.on_init = [init_throws](const childproc::message& data) {
    if (init_throws)
      throw std::runtime_error("init failed");
    worker_data = data;
  };
  options.on_broadcast = [](const childproc::message& m) {
    broadcasts.push_back(m.json());
    if (m.json() == "throw") // after it was recorded
      throw std::runtime_error("on_broadcast threw");
  };
  return childproc::serve(io, tasks(io), std::move(options));
}

} // namespace pool_worker
