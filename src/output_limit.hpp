// What exec and the sync forms do past max_buffer (internal).
#pragma once

#include "child_state.hpp"

namespace childproc::detail {

struct stream_stopper {
  static void stop(readable_stream& stream) { stream.stop_reading(); }
};

// Node's rule for spawnSync and exec: kill the child (kill_signal, then SIGKILL after
// kill_after) and close every output pipe. A child that survives the signal then gets
// EPIPE/SIGPIPE on its next write instead of being read (and buffered) for ever, and `close`
// waits for none of the pipes. The signal comes first, so a child that dies of it reports that
// signal, not SIGPIPE.
inline void stop_output(child_state& state) {
  if (state.library_can_signal())
    state.kill_by_library();
  for (auto& reader : state.readers)
    if (reader)
      stream_stopper::stop(*reader);
}

} // namespace childproc::detail
