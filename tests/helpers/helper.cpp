// The one helper child the tests drive. Its first argument names a mode; the rest are the
// mode's arguments. It prints plain text so that the tests can assert exact bytes.
//
//   args A B...        prints each argument as "[A]\n"
//   argv0              prints argv[0]
//   exit N             exits with N
//   raise SIG          raises signal SIG (a number) with its default action
//   echo TEXT          writes TEXT to stdout
//   echo-err TEXT      writes TEXT to stderr
//   write-fd FD TEXT   writes TEXT to descriptor FD
//   cat                copies stdin to stdout until EOF
//   out N              writes N bytes ('a') to stdout
//   bytes              writes the 256 byte values 0..255 to stdout
//   flood N            writes N bytes to stdout and N to stderr, interleaved in 64 KiB blocks
//   fds                prints the open descriptors, one per line (from /proc/self/fd)
//   fd-info FD         prints "open nonblock=<0|1>" or "closed"
//   pipe-size FD       prints the capacity of the pipe on FD (F_GETPIPE_SZ)
//   env NAME           prints the variable's value, or "<unset>"
//   cwd                prints the working directory
//   ids                prints "uid gid"
//   sid                prints "pid pgid sid"
//   signals            prints the blocked and ignored signal masks (from /proc/self/status)
//   sleep MS           sleeps MS milliseconds, then exits 0
//   ignore-term MS     ignores SIGTERM, says "ready", sleeps MS milliseconds, exits 0
//   close-in-exit      closes stdin and exits 0 at once
//   spawn-sleeper PDS  spawn()s "sleep 30000" of itself (with kill_on_parent_death when PDS is 1),
//                      prints its pid and exits at once without waiting for it
//   ipc-echo           sends back every message it gets on its parent channel; a message
//                      {"order": ...} is answered with {"total": sum, "customer": name}; ends
//                      when the parent disconnects
//   ipc-send-exit N    sends N messages {"i": k} and exits once they are written
//   ipc-big N          sends one bytes message of N bytes (byte k is k % 251), then waits
//   ipc-disconnect     sends "bye", disconnects, and exits 0 a little later
//   ipc-raw HEX        writes the bytes HEX to the channel fd as they are, then waits for EOF
//   ipc-crash          writes half a frame to the channel fd, then aborts
//   fork-echo-and-die  fork()s itself as ipc-echo, prints the worker's pid and exits at once
//                      without disconnecting (the worker then sees its parent die)
//   drop-and-spawn     (as root) becomes uid 65534, then spawn()s itself with uid 0 and prints
//                      the error it gets
//   spawn-sleeper-as ID  spawn()s "/bin/sleep 30" as uid and gid ID with kill_on_parent_death,
//                      prints its pid (or the error) and exits at once without waiting for it
//   spawn-fds          opens a descriptor without CLOEXEC, spawn_sync()s itself as "fds" and
//                      prints what that child printed (or "error STEP CODE")
//   stack-retry        in a new thread: spawn() with RLIMIT_AS at the current size, then again
//                      with the limit restored; prints "first CODE", "second CODE", "exit N"
//                      (prints "skip" under sanitizers, which reserve huge address ranges)
//   pidfd-fd0          closes fd 0, spawn()s itself ("exit 0", stdio on fd 2), prints "fd0 open"
//                      or "fd0 closed" while the child runs, then "exit N"
//   watch-no-fd, hub-thread-fails, hub-thread-fails-orphan, stop-reports, sigchld-ignored,
//   waitid-fails, exit-watch-read-once
//                      the exit watcher's scenarios (tests/helpers/watcher_modes.hpp)
//   stubborn-flood END ignores SIGTERM and SIGPIPE, writes 4 KiB blocks to stdout (one a ms)
//                      until a write fails; then exits with its errno (END "exit") or waits
//                      to be killed (END "wait")
//   env-nameless       prints how many environ entries have no name ("=x")
//   spawn-inherit      spawn_sync()s "env-nameless" of itself with the inherited environment and
//                      prints its output, or "error: <what>"
//   fd-target FD       prints what descriptor FD is (its /proc/self/fd link), or "closed"
//   stdin-closed       closes fd 0, then spawns "fd-target 0" of itself with spawn_sync (stdio
//                      inherit, pipe, pipe) and with spawn (fd(1), pipe, pipe and inherit, pipe,
//                      pipe), printing for each the child's answer and what fd 0 is after spawn()
//   devnull-emfile     lowers RLIMIT_NOFILE so that two pipes fit but /dev/null does not, spawns
//                      with stdio pipe, pipe, ignore and prints "<step> <errno name>"
//   deaf-worker        shuts down the reading side of its channel fd (it will never read
//                      again), sends "deaf" framed, and waits until the parent closes
//   fork-send-to-deaf  with SIGPIPE at its default, fork()s itself as deaf-worker (inherited
//                      stdio), answers "deaf" with a send, prints "send: <error>", disconnects,
//                      prints "disconnect" at the event and exits 0
//   fd-kind FD         prints what FD is: "closed", "socket", "pipe", "tty", "char <link>",
//                      "file" or "other <link>"
//   fork-fd0-closed    closes its fd 0, then fork()s itself as "fd-kind 0" (inherited stdio)
//   sigpipe-parent     with SIGPIPE at SIG_DFL, spawn()s close-in-exit of itself, writes 1 MiB to
//                      its stdin after its exit, prints "EPIPE" (or the error) and then whether
//                      SIGPIPE is still at its default ("SIGPIPE default" / "SIGPIPE ignored")
//   pool-worker        serve()s the pool's test tasks (helpers/pool_worker.hpp): "" echo, sum, pid,
//                      sleep, async_sleep, exit, signal, throw, progress, cancellable,
//                      ignore_cancel, garbage, wrong_id, alloc, grow, reverse, worker_data,
//                      broadcasts, env; its on_broadcast throws after recording "throw"
//   pool-worker-init-throws  serve()s them with an on_init that throws "init failed"
//   pool-worker-exit-at-start  exits with 3 before serve() (never ready)
//   pool-worker-slow-start MS  sleeps MS milliseconds, then acts as pool-worker
//   pool-worker-start-when FILE  exits with 3 while FILE does not exist, then acts as
//                      pool-worker (a start-up that recovers when the test says so)
//   chan-handles       on its parent channel: {"fds":1} is answered with its open fds;
//                      {"ignore":1} with {"ignored":1}, leaving the message's handle untaken;
//                      {"give":KIND,"text":T} with {"kind":KIND} and a KIND handle holding T
//                      (tests/helpers/handles.hpp); {"tcp":T} serves T and its pid on the TCP
//                      socket that came with it; anything else with {"i":..,"kind":..,"text":..}
//                      of the handle that came with it (kind "none" without one)
//   chan-crash-fd      writes half a frame that carries a descriptor, with a pipe's read end,
//                      to the channel fd, then aborts
//   chan-many-fds      writes a plain frame ({}) with 8 descriptors to the channel fd, then
//                      waits for EOF
//   cluster-worker ADDR PORT  an HTTP server on cluster::listen (helpers/cluster_worker.hpp)
//   cluster-worker-threads N ADDR PORT  cluster-worker with io.run() on N threads
//   cluster-worker-crash      exits with 1 at once (a crash loop)
//   cluster-worker-once FILE ADDR PORT  the first start (FILE absent: creates it) is a
//                      cluster-worker; later ones take their channel but never listen
//   lines N            writes stream_data::lines(N) to stdout in writes of stream_data::chunk_sizes
//   count-out N BLOCK  writes N bytes ('c') to stdout (N = 0: for ever) in BLOCK-byte writes, and
//                      after each write prints the total written so far on stderr ("T\n")
//   slow-count USEC    reads stdin 64 KiB at a time, sleeping USEC microseconds after each read,
//                      and prints the number of bytes it read at EOF
//   cluster-worker-once-crash FILE ADDR PORT  the first start (FILE absent: creates it) is a
//                      cluster-worker; later ones exit with 1 at once
#include <childproc/spawn.hpp>

#include <childproc/channel.hpp>
#include <childproc/fork.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "cluster_worker.hpp"
#include "handles.hpp"
#include "order.hpp"
#include "pool_worker.hpp"
#include "stream_data.hpp"
#include "watcher_modes.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <poll.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

void write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      std::exit(3);
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

void say(int fd, const std::string& s) {
  write_all(fd, s.data(), s.size());
}

std::string fd_target(int fd) {
  char target[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  return n < 0 ? "closed" : std::string(target, static_cast<std::size_t>(n));
}

int run(int argc, char** argv) {
  if (argc < 2)
    return 2;
  const std::string mode = argv[1];
  auto arg = [&](int i) { return i < argc ? std::string(argv[i]) : std::string(); };

  if (mode == "args") {
    for (int i = 2; i < argc; ++i) {
      // (Appended piecewise: g++ 12 -O3 gives a false -Wrestrict for "[" + std::string.)
      std::string line(1, '[');
      line.append(argv[i]).append("]\n");
      say(1, line);
    }
    return 0;
  }
  if (mode == "argv0")
    return say(1, std::string(argv[0]) + "\n"), 0;
  if (mode == "exit")
    return std::atoi(argv[2]);
  if (mode == "raise") {
    const int sig = std::atoi(argv[2]);
    std::signal(sig, SIG_DFL);
    ::raise(sig);
    return 4;
  }
  if (mode == "echo")
    return say(1, arg(2)), 0;
  if (mode == "echo-err")
    return say(2, arg(2)), 0;
  if (mode == "write-fd")
    return say(std::atoi(argv[2]), arg(3)), 0;
  if (mode == "cat") {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return n < 0 ? 5 : 0;
      write_all(1, buf, static_cast<std::size_t>(n));
    }
  }
  if (mode == "out") {
    std::string block(std::strtoull(argv[2], nullptr, 10), 'a');
    return write_all(1, block.data(), block.size()), 0;
  }
  if (mode == "bytes") {
    char all[256];
    for (int i = 0; i < 256; ++i)
      all[i] = static_cast<char>(i);
    return write_all(1, all, sizeof all), 0;
  }
  if (mode == "flood") {
    std::size_t left = std::strtoull(argv[2], nullptr, 10);
    std::vector<char> block(65536, 'x');
    while (left > 0) {
      const std::size_t n = std::min(left, block.size());
      write_all(1, block.data(), n);
      write_all(2, block.data(), n);
      left -= n;
    }
    return 0;
  }
  if (mode == "fds") {
    DIR* d = ::opendir("/proc/self/fd");
    const int self = ::dirfd(d);
    std::vector<int> fds;
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.' && std::atoi(e->d_name) != self)
        fds.push_back(std::atoi(e->d_name));
    ::closedir(d);
    std::sort(fds.begin(), fds.end());
    for (int fd : fds)
      say(1, std::to_string(fd) + "\n");
    return 0;
  }
  if (mode == "fd-info") {
    const int flags = ::fcntl(std::atoi(argv[2]), F_GETFL);
    say(1, flags < 0 ? "closed\n"
                     : std::string("open nonblock=") + ((flags & O_NONBLOCK) ? "1" : "0") + "\n");
    return 0;
  }
  if (mode == "pipe-size")
    return say(1, std::to_string(::fcntl(std::atoi(argv[2]), F_GETPIPE_SZ)) + "\n"), 0;
  if (mode == "env") {
    const char* v = std::getenv(argv[2]);
    return say(1, std::string(v ? v : "<unset>") + "\n"), 0;
  }
  if (mode == "cwd") {
    char buf[4096];
    return say(1, std::string(::getcwd(buf, sizeof buf)) + "\n"), 0;
  }
  if (mode == "ids")
    return say(1, std::to_string(::getuid()) + " " + std::to_string(::getgid()) + "\n"), 0;
  if (mode == "sid")
    return say(1, std::to_string(::getpid()) + " " + std::to_string(::getpgid(0)) + " " +
                      std::to_string(::getsid(0)) + "\n"),
           0;
  if (mode == "signals") {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
      // (SigCgt is not printed: exec resets caught signals anyway, and a sanitizer runtime in
      // this helper installs handlers of its own.)
      if (line.rfind("SigBlk:", 0) == 0 || line.rfind("SigIgn:", 0) == 0)
        say(1, line + "\n");
    return 0;
  }
  if (mode == "sleep") {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[2])));
    return 0;
  }
  if (mode == "ignore-term") {
    std::signal(SIGTERM, SIG_IGN);
    say(1, "ready\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[2])));
    return 0;
  }
  if (mode == "close-in-exit") {
    ::close(0);
    return 0;
  }
  if (mode == "spawn-sleeper") {
    boost::asio::io_context io;
    auto child = childproc::spawn(
        io, argv[0], {"sleep", "30000"},
        {.stdio = {childproc::stdio::ignore, childproc::stdio::ignore, childproc::stdio::ignore},
         .kill_on_parent_death = arg(2) == "1"});
    say(1, std::to_string(*child.pid()) + "\n");
    ::_exit(0);
  }
  if (mode.rfind("ipc-raw", 0) == 0 || mode == "ipc-crash") {
    const char* fd_text = std::getenv("CHILDPROC_CHANNEL_FD");
    if (!fd_text)
      return 7;
    const int fd = std::atoi(fd_text);
    std::string bytes;
    if (mode == "ipc-crash") {
      bytes = std::string("\x64\x00\x00\x00\x02", 5) + "only part of it";
    } else {
      const std::string hex = arg(2);
      for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    write_all(fd, bytes.data(), bytes.size());
    if (mode == "ipc-crash")
      std::abort();
    char buf[256];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    return 0;
  }
  if (mode.rfind("ipc-", 0) == 0) {
    boost::asio::io_context io;
    auto channel = childproc::parent_channel(io);
    if (mode == "ipc-echo") {
      channel.on_message([&](const childproc::message& m) {
        if (m.is_json() && m.json().is_object() && m.json().as_object().contains("order")) {
          auto o = boost::json::value_to<shop::order>(m.json().at("order"));
          int total = 0;
          for (int p : o.item_prices)
            total += p;
          channel.send(boost::json::value{{"total", total}, {"customer", o.customer}});
          return;
        }
        channel.send(m);
      });
    } else if (mode == "ipc-send-exit") {
      const int n = std::atoi(argv[2]);
      for (int i = 0; i < n; ++i)
        channel.send(boost::json::value{{"i", i}}, [i, n](std::error_code ec) {
          if (i == n - 1)
            std::exit(ec ? 8 : 0);
        });
    } else if (mode == "ipc-big") {
      std::string data(std::strtoull(argv[2], nullptr, 10), '\0');
      for (std::size_t k = 0; k < data.size(); ++k)
        data[k] = static_cast<char>(k % 251);
      channel.send(childproc::message::bytes(std::move(data)));
    } else if (mode == "ipc-disconnect") {
      channel.send("bye");
      channel.disconnect();
      boost::asio::steady_timer t(io, std::chrono::milliseconds(200));
      t.async_wait([](auto) {});
      io.run();
      return 0;
    } else {
      return 2;
    }
    io.run(); // ends when the parent disconnects or dies
    return 0;
  }
  if (mode == "fork-echo-and-die") {
    boost::asio::io_context io;
    auto child = childproc::fork(io, argv[0], {"ipc-echo"},
                                 {.stdio = {childproc::stdio::ignore, childproc::stdio::ignore,
                                            childproc::stdio::ignore, childproc::stdio::ipc}});
    say(1, std::to_string(*child.pid()) + "\n");
    ::_exit(0);
  }
  if (mode == "drop-and-spawn") {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0)
      return 6;
    try {
      auto r = childproc::spawn_sync(argv[0], {"ids"}, {.uid = 0});
      say(1, "no error\n");
    } catch (const childproc::process_error& e) {
      say(1, std::string(childproc::to_string(e.step())) + " " + std::to_string(e.code().value()) +
                 "\n");
    }
    return 0;
  }
  if (mode == "spawn-sleeper-as") {
    boost::asio::io_context io;
    const auto id = static_cast<unsigned>(std::atoi(argv[2]));
    std::error_code ec;
    auto child = childproc::spawn(
        io, "/bin/sleep", {"30"},
        {.stdio = {childproc::stdio::ignore, childproc::stdio::ignore, childproc::stdio::ignore},
         .uid = id,
         .gid = id,
         .kill_on_parent_death = true},
        ec);
    say(1, ec ? "error " + ec.message() + "\n" : std::to_string(*child.pid()) + "\n");
    ::_exit(0);
  }
  if (mode == "spawn-fds") {
    const int leaky = ::open("/dev/null", O_RDONLY); // no O_CLOEXEC: the sweep must catch it
    try {
      auto r = childproc::spawn_sync(argv[0], {"fds"});
      say(1, r.out.value_or(""));
    } catch (const childproc::process_error& e) {
      say(1, "error " + std::string(childproc::to_string(e.step())) + " " +
                 std::to_string(e.code().value()) + "\n");
    }
    ::close(leaky);
    return 0;
  }
  if (mode == "stack-retry") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return say(1, "skip\n"), 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return say(1, "skip\n"), 0;
#endif
#endif
    // The process-wide state (the SIGCHLD hub's thread in that mode) exists before the limit:
    // only this new thread's launch area is left to map under it.
    childproc::spawn_sync(argv[0], {"exit", "0"});
    std::thread([&] {
      boost::asio::io_context io;
      const childproc::spawn_options quiet{
          .stdio = {childproc::stdio::ignore, childproc::stdio::ignore, childproc::stdio::ignore}};
      std::string warm(100000, 'w'); // this thread's malloc arena exists before the limit
      std::ifstream statm("/proc/self/statm");
      unsigned long pages = 0;
      statm >> pages;
      rlimit saved{};
      ::getrlimit(RLIMIT_AS, &saved);
      rlimit tight = saved;
      tight.rlim_cur = pages * static_cast<unsigned long>(::sysconf(_SC_PAGESIZE));
      ::setrlimit(RLIMIT_AS, &tight); // no new mapping fits now
      std::error_code ec;
      childproc::spawn(io, argv[0], {"exit", "0"}, quiet, ec);
      ::setrlimit(RLIMIT_AS, &saved);
      say(1, "first " + std::to_string(ec.value()) + "\n");
      auto child = childproc::spawn(io, argv[0], {"exit", "0"}, quiet, ec);
      say(1, "second " + std::to_string(ec.value()) + "\n");
      if (!ec)
        child.on_exit([](std::optional<int> code, std::optional<int>) {
          say(1, "exit " + std::to_string(code.value_or(-1)) + "\n");
        });
      io.run();
    }).join();
    return 0;
  }
  if (mode == "pidfd-fd0") {
    boost::asio::io_context io;
    boost::asio::posix::stream_descriptor reactor_now(io); // Asio's own fds exist before
    ::close(0);
    auto child = childproc::spawn(
        io, argv[0], {"exit", "0"},
        {.stdio = {childproc::stdio::fd(2), childproc::stdio::fd(2), childproc::stdio::fd(2)}});
    say(1, ::fcntl(0, F_GETFD) >= 0 ? "fd0 open\n" : "fd0 closed\n");
    child.on_exit([](std::optional<int> code, std::optional<int>) {
      say(1, "exit " + std::to_string(code.value_or(-1)) + "\n");
    });
    io.run();
    return 0;
  }
  if (const int code = watcher_modes::run(mode, argv[0]); code >= 0)
    return code;
  if (mode == "stubborn-flood") {
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGPIPE, SIG_IGN);
    const std::string block(4096, 'y');
    for (;;) {
      const ssize_t n = ::write(1, block.data(), block.size());
      if (n < 0 && errno != EINTR)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1)); // a reader that never stops
    }                                                            // costs no more than 4 MB/s
    const int failure = errno;
    if (arg(2) == "exit")
      ::_exit(failure);
    for (;;)
      ::pause();
  }
  if (mode == "env-nameless") {
    int nameless = 0;
    for (char** e = environ; *e; ++e)
      nameless += (*e)[0] == '=';
    return say(1, std::to_string(nameless) + "\n"), 0;
  }
  if (mode == "spawn-inherit") {
    try {
      say(1, childproc::spawn_sync(argv[0], {"env-nameless"}).out.value_or(""));
    } catch (const std::exception& e) {
      say(1, std::string("error: ") + e.what() + "\n");
    }
    return 0;
  }
  if (mode == "fd-target")
    return say(1, fd_target(std::atoi(argv[2])) + "\n"), 0;
  if (mode == "stdin-closed") {
    namespace stdio = childproc::stdio;
    // Asio makes its reactor's fds (epoll, eventfd) at the first I/O object: before fd 0 is
    // closed, since they are not the library's.
    boost::asio::io_context io;
    boost::asio::steady_timer make_reactor(io);
    ::close(0);
    const auto sync =
        childproc::spawn_sync(argv[0], {"fd-target", "0"}, {.stdio = {stdio::inherit}});
    const auto line = [](std::string s) { return s.substr(0, s.find('\n')); };
    say(1, "spawn_sync inherit: child " + line(sync.out.value_or("")) + "\n");
    const std::vector<std::pair<std::string, std::vector<childproc::stdio_spec>>> tables{
        {"fd(1)", {stdio::fd(1), stdio::pipe, stdio::pipe}},
        {"inherit", {stdio::inherit, stdio::pipe, stdio::pipe}}};
    for (const auto& [name, table] : tables) {
      std::string child_says;
      auto child = childproc::spawn(io, argv[0], {"fd-target", "0"}, {.stdio = table});
      const std::string after_spawn = fd_target(0);
      child.out().on_data([&](std::string_view d) { child_says += d; });
      io.restart();
      io.run();
      say(1, "spawn " + name + ": child " + line(child_says) + " parent " + after_spawn + "\n");
    }
    return 0;
  }
  if (mode == "devnull-emfile") {
    namespace stdio = childproc::stdio;
    boost::asio::io_context io;
    boost::asio::steady_timer make_reactor(io); // Asio's fds exist before the limit is lowered
    const int lowest_free = ::fcntl(0, F_DUPFD, 0);
    ::close(lowest_free);
    const rlimit limit{static_cast<rlim_t>(lowest_free + 4), static_cast<rlim_t>(lowest_free + 4)};
    ::setrlimit(RLIMIT_NOFILE, &limit);
    std::string outcome = "no error";
    try {
      auto child = childproc::spawn(io, argv[0], {"exit", "0"},
                                    {.stdio = {stdio::pipe, stdio::pipe, stdio::ignore}});
      child.on_error([&](const childproc::process_error& e) {
        outcome =
            std::string(childproc::to_string(e.step())) + " " + ::strerrorname_np(e.code().value());
      });
      io.run();
    } catch (const childproc::process_error& e) {
      outcome =
          std::string(childproc::to_string(e.step())) + " " + ::strerrorname_np(e.code().value());
    }
    return say(1, outcome + "\n"), 0;
  }
  if (mode == "deaf-worker") {
    const char* fd_text = std::getenv("CHILDPROC_CHANNEL_FD");
    if (!fd_text)
      return 7;
    const int fd = std::atoi(fd_text);
    ::shutdown(fd, SHUT_RD);
    const char deaf[] = "\x06\x00\x00\x00\x01\"deaf\"";
    write_all(fd, deaf, sizeof deaf - 1);
    pollfd p{fd, 0, 0};
    while (!(p.revents & (POLLHUP | POLLERR)) && ::poll(&p, 1, 10000) > 0) {
    }
    return 0;
  }
  if (mode == "fork-send-to-deaf") {
    std::signal(SIGPIPE, SIG_DFL); // the test binary may have left it ignored
    boost::asio::io_context io;
    auto child = childproc::fork(io, argv[0], {"deaf-worker"});
    child.on_message([&](const childproc::message&) {
      child.send("are you there?", [&](std::error_code ec) {
        say(1, "send: " + (ec ? ec.message() : std::string("ok")) + "\n");
        child.disconnect(); // still open after the failed write: this closes it
      });
    });
    child.on_disconnect([&] { say(1, "disconnect\n"); });
    io.run();
    return 0;
  }
  if (mode == "fd-kind") {
    struct stat st;
    std::string kind = "other";
    if (::fstat(std::atoi(argv[2]), &st) != 0)
      kind = "closed";
    else if (S_ISSOCK(st.st_mode))
      kind = "socket";
    else if (S_ISFIFO(st.st_mode))
      kind = "pipe";
    else if (S_ISCHR(st.st_mode))
      kind = ::isatty(std::atoi(argv[2]))
                 ? "tty"
                 : "char " + std::filesystem::read_symlink("/proc/self/fd/" + arg(2)).string();
    else if (S_ISREG(st.st_mode))
      kind = "file";
    else
      kind += " " + std::filesystem::read_symlink("/proc/self/fd/" + arg(2)).string();
    return say(1, kind + "\n"), 0;
  }
  if (mode == "fork-fd0-closed") {
    // Asio's reactor fds (epoll, eventfd) are the application's: made before the close.
    boost::asio::io_context io;
    boost::asio::steady_timer reactor_made(io);
    ::close(0);
    auto child = childproc::fork(io, argv[0], {"fd-kind", "0"});
    io.run();
    return 0;
  }
  if (mode == "sigpipe-parent") {
    ::signal(SIGPIPE, SIG_DFL);
    boost::asio::io_context io;
    auto child = childproc::spawn(io, argv[0], {"close-in-exit"});
    std::string result = "no result";
    child.on_exit([&](auto, auto) {
      child.in().write(std::string(1 << 20, 'x'), [&](std::error_code ec) {
        result = ec == std::errc::broken_pipe ? "EPIPE" : "error " + ec.message();
      });
    });
    io.run();
    struct sigaction now {};
    ::sigaction(SIGPIPE, nullptr, &now);
    say(1, result + "\nSIGPIPE " + (now.sa_handler == SIG_DFL ? "default" : "ignored") + "\n");
    return 0;
  }
  if (mode == "pool-worker" || mode == "pool-worker-init-throws")
    return pool_worker::serve(mode == "pool-worker-init-throws");
  if (mode == "pool-worker-exit-at-start")
    ::_exit(3);
  if (mode == "pool-worker-slow-start") {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[2])));
    return pool_worker::serve(false);
  }
  if (mode == "pool-worker-start-when") {
    if (::access(argv[2], F_OK) != 0)
      ::_exit(3);
    return pool_worker::serve(false);
  }
  if (mode == "chan-handles") {
    boost::asio::io_context io;
    auto channel = childproc::parent_channel(io);
    channel.on_message([&](const childproc::message& m) {
      const auto& o = m.json().as_object();
      if (o.contains("fds")) {
        boost::json::array fds;
        for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
          fds.push_back(std::stoi(e.path().filename().string()));
        channel.send(boost::json::value{{"fds", fds}});
      } else if (o.contains("ignore")) {
        channel.send(boost::json::value{{"ignored", 1}});
      } else if (o.contains("give")) {
        const std::string kind(o.at("give").as_string());
        childproc::owned_fd fd(handles::make(kind, std::string(o.at("text").as_string())));
        channel.send(boost::json::value{{"kind", kind}}, std::move(fd));
      } else if (o.contains("tcp")) {
        auto socket = childproc::adopt<boost::asio::ip::tcp::socket>(io, m.take_handle());
        const std::string text =
            std::string(o.at("tcp").as_string()) + " " + std::to_string(::getpid());
        boost::asio::write(socket, boost::asio::buffer(text));
        channel.send(boost::json::value{{"served", 1}});
      } else {
        const childproc::owned_fd fd = m.take_handle();
        channel.send(boost::json::value{{"i", o.contains("i") ? o.at("i") : nullptr},
                                        {"kind", fd ? handles::kind_of(fd.get()) : "none"},
                                        {"text", fd ? handles::read_text(fd.get()) : ""}});
      }
    });
    io.run(); // ends when the parent disconnects or dies
    return 0;
  }
  if (mode == "chan-crash-fd" || mode == "chan-many-fds") {
    const char* fd_text = std::getenv("CHILDPROC_CHANNEL_FD");
    if (!fd_text)
      return 7;
    const int channel_fd = std::atoi(fd_text);
    const bool crash = mode == "chan-crash-fd";
    // Crashing: a JSON frame that carries a descriptor, 100 bytes announced and 5 sent. Else a
    // plain JSON frame, sent with 8 descriptors (more than a channel expects in a read).
    const std::string frame = crash ? std::string("\x64\x00\x00\x00\x81", 5) + "{\"a\":"
                                    : std::string("\x02\x00\x00\x00\x01", 5) + "{}";
    const int count = crash ? 1 : 8;
    int fds[8];
    for (int k = 0; k < count; ++k)
      fds[k] = handles::make("pipe", "in flight");
    iovec data{const_cast<char*>(frame.data()), frame.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
    msghdr header{};
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    if (::sendmsg(channel_fd, &header, 0) < 0)
      return 8;
    if (crash)
      std::abort();
    char buf[256];
    while (::read(channel_fd, buf, sizeof buf) > 0) {
    }
    return 0;
  }
  if (mode == "cluster-worker")
    return cluster_worker::serve(argv[2], argv[3]);
  if (mode == "cluster-worker-threads")
    return cluster_worker::serve(argv[3], argv[4], std::atoi(argv[2]));
  if (mode == "cluster-worker-crash")
    ::_exit(1);
  if (mode == "cluster-worker-once")
    return cluster_worker::serve_once(argv[2], argv[3], argv[4]);
  if (mode == "lines") {
    const std::string text = stream_data::lines(std::strtoull(argv[2], nullptr, 10));
    std::size_t at = 0;
    for (std::size_t k = 0; at < text.size(); ++k) {
      const std::size_t n = std::min(
          text.size() - at, stream_data::chunk_sizes[k % std::size(stream_data::chunk_sizes)]);
      write_all(1, text.data() + at, n);
      at += n;
    }
    return 0;
  }
  if (mode == "count-out") {
    const std::size_t total = std::strtoull(argv[2], nullptr, 10);
    const std::vector<char> block(std::strtoull(argv[3], nullptr, 10), 'c');
    for (std::size_t written = 0; total == 0 || written < total;) {
      const std::size_t n = total == 0 ? block.size() : std::min(block.size(), total - written);
      write_all(1, block.data(), n);
      written += n;
      say(2, std::to_string(written) + "\n");
    }
    return 0;
  }
  if (mode == "slow-count") {
    std::vector<char> buffer(65536);
    std::size_t total = 0;
    for (;;) {
      const ssize_t n = ::read(0, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      total += static_cast<std::size_t>(n);
      std::this_thread::sleep_for(std::chrono::microseconds(std::atoi(argv[2])));
    }
    return say(1, std::to_string(total) + "\n"), 0;
  }
  if (mode == "cluster-worker-once-crash") {
    if (std::FILE* f = std::fopen(argv[2], "wx")) {
      std::fclose(f);
      return cluster_worker::serve(argv[3], argv[4]);
    }
    ::_exit(1);
  }
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  return run(argc, argv);
}
