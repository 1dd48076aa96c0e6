// Node's readable.pipe(writable) between a child's output and another child's stdin.
//
//   childproc::pipe(a.out(), b.in(), [](boost::system::error_code ec, std::size_t bytes) {...});
#pragma once

#include <childproc/detail/completion.hpp>
#include <childproc/stream.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <memory>

namespace childproc {
namespace detail {
using pipe_completion = completion<boost::system::error_code, std::size_t>;
void start_pipe(readable_stream& from, writable_stream& to, std::unique_ptr<pipe_completion> done);
} // namespace detail

inline namespace v1 {

/// Copies `from` into `to` until EOF, with backpressure, then ends `to` (Node's
/// `from.pipe(to)`). `from` is read in pulled mode, a chunk (64 KiB at most) only while `to`'s
/// queue is below its high-water mark; after a write() that returned false the copy waits for
/// `to`'s drain. So the parent holds at most about high_water_mark() + 64 KiB whatever the
/// stream's size. Completion void(boost::system::error_code, std::size_t bytes written), always
/// later: success once `to` is ended after the last byte; otherwise the first error, of a write
/// (EPIPE when the reader went away: `to` is closed, `from` stays pulled, with the bytes not yet
/// read still in its pipe) or of a read (`to` is then not ended): operation_aborted when `from`
/// is closed or handed over during the copy (Asio's code for a stopped operation), bad_descriptor
/// when it was not open at the start. Both streams must be used from one executor (one thread or a
/// strand); the completion runs on `from`'s unless the handler has its own. Cancellation is not
/// supported; close() either stream to stop the copy.
template <class PipeToken = asio::default_completion_token_t<readable_stream::executor_type>>
auto pipe(readable_stream& from, writable_stream& to, PipeToken&& token = PipeToken()) {
  return asio::async_initiate<PipeToken, void(boost::system::error_code, std::size_t)>(
      [&from, &to](auto handler) {
        detail::start_pipe(from, to,
                           detail::make_completion<boost::system::error_code, std::size_t>(
                               std::move(handler), from.get_executor()));
      },
      token);
}

} // namespace v1
} // namespace childproc
