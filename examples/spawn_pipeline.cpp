// ls | grep, the two ways Node writes it:
//
//   const ls = spawn('ls');
//   const grep = spawn('grep', ['^CMake'], {stdio: [ls.stdout, 'pipe', 'inherit']});
//   readline.createInterface({input: grep.stdout}).on('line', (l) => console.log(`grep: ${l}`));
//
//   const ls2 = spawn('ls'), grep2 = spawn('grep', ['^CMake']);
//   ls2.stdout.pipe(grep2.stdin);
//
// The first hands the pipe to grep (no byte goes through this process, as in a shell); the
// second copies it here, with backpressure.
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

int main() {
  boost::asio::io_context io;

  auto ls = childproc::spawn(io, "ls");
  childproc::spawn_options grep_options{.stdio = {childproc::stdio::from(ls.out()),
                                                  childproc::stdio::pipe,
                                                  childproc::stdio::inherit}};
  auto grep = childproc::spawn(io, "grep", {"^CMake"}, grep_options);
  grep.out().on_line([](std::string_view line) { fmt::print("grep: {}\n", line); });
  grep.on_close([](std::optional<int> code, std::optional<int>) {
    fmt::print("grep exited with code {}\n", code ? std::to_string(*code) : "null");
  });
  io.run();

  io.restart();
  auto ls2 = childproc::spawn(io, "ls");
  auto grep2 = childproc::spawn(io, "grep", {"^CMake"});
  grep2.out().on_line([](std::string_view line) { fmt::print("pipe(): {}\n", line); });
  childproc::pipe(ls2.out(), grep2.in(), [](boost::system::error_code ec, std::size_t bytes) {
    fmt::print("piped {} bytes: {}\n", bytes, ec ? ec.message() : "ok");
  });
  io.run();
}
