// The source document's spawn snippet with 'close':
//
//   const ls = spawn('ls', ['-la', '/usr']);
//   ls.stdout.on('data', (data) => console.log(`Output: ${data}`));
//   ls.stderr.on('data', (data) => console.error(`Error: ${data}`));
//   ls.on('close', (code) => console.log(`Process exited with code ${code}`));
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

int main() {
  boost::asio::io_context io;

  auto ls = childproc::spawn(io, "ls", {"-la", "/usr"});

  ls.out().on_data([](std::string_view data) { fmt::print("Output: {}", data); });
  ls.err().on_data([](std::string_view data) { fmt::print(stderr, "Error: {}", data); });
  ls.on_close([](std::optional<int> code, std::optional<int>) {
    // Node prints null for a child ended by a signal.
    fmt::print("Process exited with code {}\n", code ? std::to_string(*code) : "null");
  });

  io.run();
}
