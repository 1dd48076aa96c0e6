// childproc: Node.js's child_process for C++20, on Boost.Asio. The umbrella header.
#pragma once

#include <childproc/channel.hpp>
#include <childproc/child_process.hpp>
#include <childproc/error.hpp>
#include <childproc/exec.hpp>
#include <childproc/executor.hpp>
#include <childproc/exit_status.hpp>
#include <childproc/fork.hpp>
#include <childproc/message.hpp>
#include <childproc/options.hpp>
#include <childproc/pipe.hpp>
#include <childproc/spawn.hpp>
#include <childproc/stream.hpp>
#include <childproc/version.hpp>
