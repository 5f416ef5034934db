// RINGSP_CLONES: compile a function once per x86-64 ISA level and pick one at load time
// (GCC >= 12 on x86-64 Linux), since the extension is built without -march flags.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__)
#define RINGSP_CLONES __attribute__((target_clones("default", "arch=haswell", "arch=x86-64-v4")))
#else
#define RINGSP_CLONES
#endif
