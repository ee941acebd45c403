// Opening the files Tessera reads (datasets, configs, tokenizers, manifests, checkpoint shards, fixtures) only
// when they are regular files. open(2) of a FIFO blocks until a writer appears, so a named pipe given as a
// dataset would hang the job forever; a directory, a device (/dev/zero never ends) or a socket is never what a
// user meant either. Each check says what the path is instead, so the message can tell the user what to fix.
#pragma once

#include <string>

namespace tessera {

// Why path cannot be read as a regular file, or "" when it can: "does not exist", "is a directory, not a file",
// "is a FIFO (named pipe), not a regular file", "is a character device, not a regular file", ... or "cannot
// be accessed (<reason>)". Symbolic links are followed; a dangling one says where it points.
std::string regular_file_problem(const std::string& path);

// open(2) read-only of a regular file, without ever blocking: opened with O_NONBLOCK (a FIFO swapped in after
// the check then fails fstat's test instead of hanging), checked with fstat, then O_NONBLOCK is cleared.
// Returns the descriptor, or -1 with the reason (as regular_file_problem words it) in *problem.
int open_regular_file(const std::string& path, std::string* problem);

}  // namespace tessera
