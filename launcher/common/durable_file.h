// Durable files: data that must survive a crash or power loss once a function returns (checkpoints).
//
// A file is durable after fsync of the file and of the directory entry that names it; a rename is atomic
// (readers see the old or the new name, never half of one) and durable after fsync of the directory.
// Every function throws CheckpointError naming the path and the system's reason.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

// fsync of a file or a directory (opened read-only).
void fsync_path(const std::string& path);

// Reads the whole file once to hash it (XXH64, seed 0), then fsyncs it. Returns the hash; its size goes to
// size_bytes.
uint64_t hash_and_sync_file(const std::string& path, uint64_t* size_bytes);

// Writes contents to path through a temporary file in the same directory (fsync, rename, fsync of the
// directory), so path holds either its old contents or all of the new ones.
void write_file_atomically(const std::string& path, const std::string& contents);

// Renames from to to (atomic within one file system) and fsyncs the directory of `to`.
void rename_durably(const std::string& from, const std::string& to);

// The whole contents of a file. Throws CheckpointError if it cannot be read.
std::string read_file(const std::string& path);

}  // namespace tessera
