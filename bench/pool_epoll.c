// The raw C pool's one-in-flight run (../shared/bench/peers/c/bench_c.c, "pool" tasks_w1) with
// the one change an Asio program cannot avoid: every process waits in epoll_wait (edge-triggered,
// as Asio's reactor registers descriptors) and then reads without blocking, where the peer
// blocks in poll() and read(). The same tasks (20-byte {len, a, b} frames, a + b answered in a
// 12-byte frame), the same 2 forked workers over socket pairs, one task in flight on each.
//
//   pool_epoll [N]   prints `c pool tasks_w1_epoll <tasks/s> tasks/s`
//
// What it shows: how much of the gap between childproc's pool and the peer's is the wait itself
// (epoll's wake-ups against a blocking read's), outside anything the library does.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  uint32_t len;
  int64_t a, b;
} __attribute__((packed)) task_frame;
typedef struct {
  uint32_t len;
  int64_t r;
} __attribute__((packed)) result_frame;

enum { workers = 2 };

static void die(const char* what) {
  perror(what);
  exit(1);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int watch(int fd, uint32_t tag) {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u32 = tag};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0)
    die("epoll");
  return ep;
}

// Answers every whole task frame it has. A short read means the socket is empty (no descriptors
// travel here), so it waits then, as childproc's channel does, rather than read to EAGAIN.
static void worker(int fd) {
  static char in[1 << 16], out[1 << 16];
  size_t have = 0;
  const int ep = watch(fd, 0);
  int wait_first = 1;
  for (;;) {
    if (wait_first) {
      struct epoll_event e;
      if (epoll_wait(ep, &e, 1, -1) < 0 && errno != EINTR)
        _exit(1);
    }
    const size_t room = sizeof in - have;
    const ssize_t r = recv(fd, in + have, room, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      wait_first = 1;
      continue;
    }
    if (r <= 0)
      _exit(0);
    wait_first = (size_t)r < room;
    have += (size_t)r;
    size_t used = 0, o = 0;
    for (; have - used >= sizeof(task_frame); used += sizeof(task_frame)) {
      task_frame t;
      memcpy(&t, in + used, sizeof t);
      const result_frame res = {8, t.a + t.b};
      memcpy(out + o, &res, sizeof res);
      o += sizeof res;
    }
    memmove(in, in + used, have - used);
    have -= used;
    if (o && write(fd, out, o) != (ssize_t)o)
      _exit(1);
  }
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? atoi(argv[1]) : 100000;
  int fds[workers];
  pid_t pids[workers];
  for (int w = 0; w < workers; w++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      die("socketpair");
    pids[w] = fork();
    if (pids[w] < 0)
      die("fork");
    if (pids[w] == 0) {
      close(sv[0]);
      for (int k = 0; k < w; k++)
        close(fds[k]);
      worker(sv[1]);
    }
    close(sv[1]);
    fds[w] = sv[0];
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int w = 0; w < workers; w++) {
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)w};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[w], &e) != 0)
      die("epoll_ctl");
  }
  static char in[workers][1 << 16];
  size_t have[workers] = {0};
  int next = 0, done = 0, busy[workers] = {0};
  int64_t sum = 0;
  const double t0 = now_s();
  while (done < n) {
    for (int w = 0; w < workers; w++)
      if (!busy[w] && next < n) {
        const task_frame t = {16, next++, 1};
        if (write(fds[w], &t, sizeof t) != (ssize_t)sizeof t)
          die("write");
        busy[w] = 1;
      }
    struct epoll_event events[workers];
    const int ready = epoll_wait(ep, events, workers, -1);
    if (ready < 0 && errno != EINTR)
      die("epoll_wait");
    for (int i = 0; i < ready; i++) {
      const int w = (int)events[i].data.u32;
      for (;;) { // edge-triggered: read until a short read (the socket is then empty)
        const size_t room = sizeof in[w] - have[w];
        const ssize_t r = recv(fds[w], in[w] + have[w], room, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
          break;
        if (r <= 0)
          die("read");
        have[w] += (size_t)r;
        size_t used = 0;
        for (; have[w] - used >= sizeof(result_frame); used += sizeof(result_frame)) {
          result_frame res;
          memcpy(&res, in[w] + used, sizeof res);
          sum += res.r;
          done++;
          busy[w] = 0;
        }
        memmove(in[w], in[w] + used, have[w] - used);
        have[w] -= used;
        if ((size_t)r < room)
          break;
      }
    }
  }
  const double dt = now_s() - t0;
  for (int w = 0; w < workers; w++) {
    close(fds[w]);
    waitpid(pids[w], NULL, 0);
  }
  if (sum != (int64_t)n * (n - 1) / 2 + n) {
    fprintf(stderr, "pool_epoll: bad sum\n");
    return 1;
  }
  printf("c pool tasks_w1_epoll %.6g tasks/s\n", n / dt);
  return 0;
}
