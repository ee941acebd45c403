// Numbers for people: "1.49 GB", "12.3k".
#pragma once

#include <string>

namespace tessera {

// Bytes with a decimal unit: "950 B", "13.0 MB", "1.49 GB".
std::string human_bytes(double bytes);
// A count with a k/M/G suffix above ten thousand: "9931", "12.3k", "1.07M".
std::string human_count(double n);

}  // namespace tessera
