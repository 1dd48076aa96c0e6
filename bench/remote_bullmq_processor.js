// The remote workload's BullMQ processor (bench/remote_bullmq.js): a sandboxed processor file,
// which BullMQ runs in a child process of its Worker, one child per job it runs at once. Echoes
// the task's payload, as childproc_bench's "echo" handler does.
'use strict';
module.exports = async (job) => job.data.p;
