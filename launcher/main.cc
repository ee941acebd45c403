// The `tessera` command line.
#include <cstdio>

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "usage: tessera <train|verify|prepare> ...\n");
  return 2;
}
