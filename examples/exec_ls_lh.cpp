// The source document's exec snippet:
//
//   exec("ls -lh", (error, stdout, stderr) => {
//       if (error) { console.log(`error: ${error.message}`); return }
//       if (stderr) { console.log(`error: ${error.message}`); return }
//       console.log(`stdout: ${stdout} `);
//   })
//
// (The snippet's second branch reads error.message although error is null there; the port
// prints the stderr it meant to show.)
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

int main() {
  boost::asio::io_context io;

  childproc::async_exec(io, "ls -lh",
                        [](boost::system::error_code ec, childproc::exec_result result) {
                          if (ec) {
                            fmt::print("error: {}\n", childproc::exec_error(ec, result).what());
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
