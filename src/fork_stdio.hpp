// fork()'s stdio table, shared by fork() and the cluster (which adds a slot after it).
#pragma once

#include <childproc/fork.hpp>

#include <string>
#include <vector>

namespace childproc::detail {

// fork()'s stdio table in `options`: Node's default when none is given, a given one padded to
// three slots; throws process_error(errc::ipc_required) when a given one has no stdio::ipc (and
// closes the pipes stdio::from() handed to it, as every refusal does).
void settle_fork_stdio(fork_options& options, const std::string& file,
                       const std::vector<std::string>& args);

} // namespace childproc::detail
