// The library's version.
#pragma once

#define CHILDPROC_VERSION_MAJOR 0
#define CHILDPROC_VERSION_MINOR 1
#define CHILDPROC_VERSION_PATCH 0

namespace childproc {
inline namespace v1 {
/// The version of the library this program was compiled against, as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
} // namespace v1
} // namespace childproc
