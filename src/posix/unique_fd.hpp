// An owned file descriptor, closed on destruction.
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#include <utility>

namespace childproc::detail::posix {

class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o)
      reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

// Descriptors 0..2 are the application's stdio: a descriptor the library creates while one of
// them is closed lands there and would then be taken for the application's own (an `inherit`
// slot, a worker's stdin). Every fd the library creates goes through this: one below 3 is moved
// to the lowest free fd >= 3 (CLOEXEC) and the original closed. Returns the fd, or -1 with errno
// set (the original is closed then too).
inline int above_stdio(int fd) noexcept {
  if (fd < 0 || fd > 2)
    return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return moved;
}

// A pair of fds that pipe2() or socketpair() just made (`made` is that call's result), each
// moved above stdio as the library's fds must be, in `first` and `second`. Returns 0, or the
// errno with nothing left open. One implementation for the stdio pipes, the channel's socketpair
// and the pool's thread workers.
inline int take_pair_above_stdio(int made, const int (&fds)[2], unique_fd& first,
                                 unique_fd& second) noexcept {
  if (made < 0)
    return errno;
  unique_fd one(above_stdio(fds[0]));
  const int first_errno = errno;
  unique_fd two(above_stdio(fds[1]));
  if (!one || !two)
    return one ? errno : first_errno;
  first = std::move(one);
  second = std::move(two);
  return 0;
}

// The parent's end of a pair is non-blocking (Asio waits on it); the child's stays blocking.
inline void set_nonblocking(int fd) noexcept {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

} // namespace childproc::detail::posix
