// The worker side on a given channel (internal): serve() over the parent channel, and the pool's
// thread workers over an in-process socket pair.
#pragma once

#include <childproc/channel.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>

#include <optional>

namespace childproc::detail {

// Answers the pool's envelopes on `ch` until it disconnects, running `io`; returns serve()'s exit
// status. `every`, when set, serves every task name.
int serve_channel(boost::asio::io_context& io, channel ch, task_table tasks,
                  std::optional<task_handler> every, serve_options options);

} // namespace childproc::detail
