// The source document's exec("find /") snippet, which shows the cost of buffering: the output of
// `find /` is larger than exec's default max_buffer (1 MiB, Node's maxBuffer), so the child is
// killed and the callback gets "stdout maxBuffer length exceeded", with exactly 1 MiB kept.
//
//   exec("find /", (error, stdout, stderr) => {
//       if (error) { console.log(`error: ${error.message}`); return }
//       ...
//   })
//
// An argument names another directory to run find over (the test's, whose output is known to pass
// 1 MiB: on a small machine, `find /` may print less).
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

#include <string>

int main(int argc, char** argv) {
  boost::asio::io_context io;
  // (single quotes: the shell takes the directory as one word, whatever it holds but a quote)
  const std::string command = argc > 1 ? fmt::format("find '{}'", argv[1]) : "find /";

  childproc::async_exec(io, command,
                        [](boost::system::error_code ec, childproc::exec_result result) {
                          if (ec) {
                            fmt::print("error: {}\n", childproc::exec_error(ec, result).what());
                            fmt::print("kept {} bytes of stdout; child killed: {}\n",
                                       result.out.size(), result.killed);
                            return;
                          }
                          if (!result.err.empty()) {
                            fmt::print("error: {}\n", result.err);
                            return;
                          }
                          fmt::print("stdout: {} \n", result.out);
                        });

  io.run();
}
