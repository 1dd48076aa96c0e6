// What the HTTP examples' routes share: fork a worker, send it one task, await its reply.
#pragma once

#include <childproc/childproc.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace fork_task {

struct outcome {
  std::optional<boost::json::value> reply; // none: the worker ended (or timed out) first
  childproc::exit_status status;
  long pid = 0;
};

// Forks `program args`, sends `task`, takes the worker's first message as its reply, then
// disconnects (the worker's event loop ends, it exits) and awaits its exit, so that no worker
// outlives the call. options.timeout, if set, kills a worker that takes too long.
inline boost::asio::awaitable<outcome> run(std::string program, std::vector<std::string> args,
                                           childproc::message task,
                                           childproc::fork_options options) {
  // The executor first: g++ 12 can double-destroy the by-value options if the co_await is in
  // the same expression.
  const auto executor = co_await boost::asio::this_coro::executor;
  auto child = childproc::fork(executor, std::move(program), std::move(args), std::move(options));
  outcome result;
  result.pid = child.pid().value_or(0);
  child.on_message([&result, &child](const childproc::message& message) {
    if (!result.reply) {
      result.reply = message.json();
      child.disconnect();
    }
  });
  child.send(task);
  auto [ec, status] = co_await child.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  result.status = status;
  co_return result;
}

// run() with the default options. A plain function, not a coroutine's default argument: g++ 12
// double-destroys an aggregate temporary made inside a co_await expression (the caller's).
inline boost::asio::awaitable<outcome> run(std::string program, std::vector<std::string> args,
                                           childproc::message task) {
  return run(std::move(program), std::move(args), std::move(task), childproc::fork_options{});
}

// A worker's side: answers each task with reply(task) until the parent disconnects.
template <class Reply>
int serve_tasks(Reply reply) {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& message) { parent.send(reply(message.json())); });
  io.run();
  return 0;
}

} // namespace fork_task
