// Error codes, categories, messages and signal names.
#include <childproc/error.hpp>
#include <childproc/exit_status.hpp>

#include <catch2/catch.hpp>

#include <cerrno>
#include <csignal>

TEST_CASE("childproc::errc has its own category and maps to std::errc where one applies",
          "[errors]") {
  std::error_code ec = childproc::errc::max_buffer_exceeded;
  CHECK(ec.category() == childproc::error_category());
  CHECK(std::string(ec.category().name()) == "childproc");
  CHECK(ec == std::errc::no_buffer_space);
  CHECK(std::error_code(childproc::errc::timed_out) == std::errc::timed_out);
  CHECK(ec.message() == "maxBuffer length exceeded");
  CHECK(std::error_code(childproc::errc::channel_closed) != std::errc::timed_out);
}

TEST_CASE("process_error's message is Node's, with the failed step after it", "[errors]") {
  childproc::process_error e(std::error_code(ENOENT, std::system_category()), "spawn ls", "ls",
                             {"-l"}, childproc::spawn_step::execve);
  CHECK(std::string(e.what()) == "spawn ls ENOENT (execve): No such file or directory");
  CHECK(e.syscall() == "spawn ls");
  CHECK(e.path() == "ls");
  CHECK(e.spawn_args() == std::vector<std::string>{"-l"});
  childproc::process_error k(std::error_code(EPERM, std::system_category()), "kill", "x", {});
  CHECK(std::string(k.what()) == "kill EPERM: Operation not permitted");
}

TEST_CASE("signal names round-trip as Node prints them", "[errors]") {
  CHECK(childproc::signal_name(SIGTERM) == "SIGTERM");
  CHECK(childproc::signal_name(SIGKILL) == "SIGKILL");
  CHECK(childproc::signal_number("SIGINT") == SIGINT);
  CHECK(childproc::signal_number("HUP") == SIGHUP);
  std::error_code ec;
  CHECK(childproc::signal_number("SIGNOPE", ec) == 0);
  CHECK(ec == childproc::errc::unknown_signal);
}
