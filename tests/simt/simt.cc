// The fiber scheduler of the SIMT emulation (simt.h): one fiber per thread of a block, run in turn on the
// launching host thread, each until it waits at a barrier or returns.
//
// Switching fibers: on x86-64 a dozen instructions (below) that save the callee-saved registers on the fiber's
// stack and swap stack pointers; elsewhere, and where control-flow protection (CET shadow stacks) is compiled in,
// POSIX ucontext. swapcontext saves and restores the signal mask with a system call at every switch, and the
// emulation switches a few times per thread at every barrier and shuffle: the assembly makes the kernel tests
// about ten times faster.
#include "tests/simt/simt.h"

#if defined(__x86_64__) && !defined(__CET__)
#define TS_SIMT_STACK_SWITCH 1
#else
#include <ucontext.h>
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#ifdef TS_SIMT_STACK_SWITCH
// tessera_simt_switch(&save, load): pushes the System V callee-saved registers, stores the stack pointer into
// save, loads `load` as the stack pointer, pops the registers saved there and returns on that stack.
extern "C" void tessera_simt_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl tessera_simt_switch
  .hidden tessera_simt_switch
  .type tessera_simt_switch, @function
tessera_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tessera_simt_switch, .-tessera_simt_switch
)");
#endif

namespace simt {
namespace {

constexpr size_t kStackBytes = 64 * 1024;
constexpr int kMaxThreads = 1024;

enum class State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
#ifdef TS_SIMT_STACK_SWITCH
  void* stack_pointer;
#else
  ucontext_t context;
#endif
  State state;
  uint3 index;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<unsigned char> warp_slots;  // 32 lanes x 16 bytes per warp
  std::vector<float> dynamic_shared;
#ifdef TS_SIMT_STACK_SWITCH
  void* scheduler;
#else
  ucontext_t scheduler;
#endif
  int current = -1;
  const std::function<void()>* body = nullptr;
};

Block& block() {
  static Block b;
  return b;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "simt: %s (block %u,%u,%u, thread %u,%u,%u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
               threadIdx.x, threadIdx.y, threadIdx.z);
  std::abort();
}

#ifdef TS_SIMT_STACK_SWITCH
[[noreturn]] void fiber_entry() {
  Block& b = block();
  (*b.body)();
  Fiber& f = b.fibers[b.current];
  f.state = State::kDone;
  tessera_simt_switch(&f.stack_pointer, b.scheduler);
  __builtin_unreachable();  // a finished fiber is never resumed
}

// A fresh fiber's stack as tessera_simt_switch leaves a suspended one: six zero registers, then fiber_entry as
// the return address, then a null return address for fiber_entry itself, which never returns. The stack top is
// 16-byte aligned, so fiber_entry starts with the stack pointer 8 below a multiple of 16, as after a call.
void start(Fiber& f, char* stack) {
  auto top = reinterpret_cast<uintptr_t>(stack + kStackBytes) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&fiber_entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  f.stack_pointer = sp;
}
void resume(Fiber& f) { tessera_simt_switch(&block().scheduler, f.stack_pointer); }
void suspend(Fiber& f) { tessera_simt_switch(&f.stack_pointer, block().scheduler); }
#else
void fiber_entry() {
  Block& b = block();
  (*b.body)();
  b.fibers[b.current].state = State::kDone;
  // uc_link returns to the scheduler.
}

void start(Fiber& f, char* stack) {
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = &block().scheduler;
  makecontext(&f.context, fiber_entry, 0);
}
void resume(Fiber& f) { swapcontext(&block().scheduler, &f.context); }
void suspend(Fiber& f) { swapcontext(&f.context, &block().scheduler); }
#endif

// Suspends the running fiber in `state` and resumes the scheduler.
void wait(State state) {
  Block& b = block();
  if (b.current < 0) fail("barrier outside a kernel");
  Fiber& f = b.fibers[b.current];
  f.state = state;
  suspend(f);
}

int warp_of(int linear) { return linear / 32; }

void run_block(int threads) {
  Block& b = block();
  const int warps = (threads + 31) / 32;
  int done = 0;
  while (done < threads) {
    bool ran = false;
    for (int t = 0; t < threads; ++t) {
      Fiber& f = b.fibers[t];
      if (f.state != State::kReady) continue;
      b.current = t;
      threadIdx = f.index;
      resume(f);
      if (f.state == State::kDone) ++done;
      ran = true;
    }
    b.current = -1;
    if (done == threads) break;
    // Release every warp whose lanes all wait at the warp barrier.
    bool released = false;
    for (int w = 0; w < warps; ++w) {
      const int begin = w * 32, end = std::min(threads, begin + 32);
      int waiting = 0, finished = 0, at_block = 0;
      for (int t = begin; t < end; ++t) {
        waiting += b.fibers[t].state == State::kAtWarpBarrier;
        finished += b.fibers[t].state == State::kDone;
        at_block += b.fibers[t].state == State::kAtBlockBarrier;
      }
      if (waiting == 0) continue;
      if (waiting == end - begin) {
        for (int t = begin; t < end; ++t) b.fibers[t].state = State::kReady;
        released = true;
      } else if (waiting + finished + at_block == end - begin) {
        threadIdx = b.fibers[begin].index;
        fail(finished > 0 ? "warp shuffle or __syncwarp while lanes of the warp have returned"
                          : "warp shuffle or __syncwarp while other lanes of the warp wait at __syncthreads");
      }
    }
    if (released || ran) continue;
    // Nothing ran and no warp was released: every live thread waits at __syncthreads, or this is a deadlock.
    int at_block = 0;
    for (int t = 0; t < threads; ++t) at_block += b.fibers[t].state == State::kAtBlockBarrier;
    if (at_block + done != threads) fail("deadlock: no thread of the block can make progress");
    for (int t = 0; t < threads; ++t) {
      if (b.fibers[t].state == State::kAtBlockBarrier) b.fibers[t].state = State::kReady;
    }
  }
}

}  // namespace

void sync_threads() { wait(State::kAtBlockBarrier); }

void sync_warp() { wait(State::kAtWarpBarrier); }

void shuffle(void* value, int bytes, int source) {
  Block& b = block();
  const int linear = b.current;
  const int warp = warp_of(linear), lane = linear % 32;
  unsigned char* slots = b.warp_slots.data() + static_cast<size_t>(warp) * 32 * 16;
  std::memcpy(slots + lane * 16, value, bytes);
  wait(State::kAtWarpBarrier);
  const int threads = static_cast<int>(b.fibers.size());
  if (source >= 0 && source < 32 && warp * 32 + source < threads) std::memcpy(value, slots + source * 16, bytes);
  wait(State::kAtWarpBarrier);  // no lane overwrites its slot before every lane has read
}

void* dynamic_shared() { return block().dynamic_shared.data(); }

void run(dim3 grid, dim3 block_dim, size_t shared_bytes, const std::function<void()>& body) {
  const long long threads = static_cast<long long>(block_dim.x) * block_dim.y * block_dim.z;
  if (threads < 1 || threads > kMaxThreads) fail("a block has 1 to 1024 threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail("an empty grid");
  if (grid.y > 65535 || grid.z > 65535) fail("gridDim.y and gridDim.z are at most 65535");
  if (shared_bytes > 227 * 1024) fail("more dynamic shared memory than a block can have (227 KiB)");
  Block& b = block();
  const int n = static_cast<int>(threads);
  while (static_cast<int>(b.stacks.size()) < n) b.stacks.push_back(std::make_unique<char[]>(kStackBytes));
  b.fibers.assign(n, Fiber{});
  b.warp_slots.assign(static_cast<size_t>((n + 31) / 32) * 32 * 16, 0);
  b.dynamic_shared.resize((shared_bytes + sizeof(float) - 1) / sizeof(float));
  b.body = &body;
  gridDim = grid;
  blockDim = block_dim;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        std::fill(b.dynamic_shared.begin(), b.dynamic_shared.end(), std::numeric_limits<float>::quiet_NaN());
        for (int t = 0; t < n; ++t) {
          Fiber& f = b.fibers[t];
          f.state = State::kReady;
          f.index = {t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
          start(f, b.stacks[t].get());
        }
        run_block(n);
      }
    }
  }
  b.body = nullptr;
}

}  // namespace simt
