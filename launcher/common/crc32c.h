// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord files use it to frame their records.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tessera {

// The CRC-32C of size bytes at data ("123456789" gives 0xE3069283). Table-driven; thread-safe.
uint32_t crc32c(const void* data, size_t size);

// TFRecord's masked form of a CRC: rotated right by 15 bits plus 0xA282EAD8, so that a CRC of data holding
// CRCs stays well distributed.
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace tessera
