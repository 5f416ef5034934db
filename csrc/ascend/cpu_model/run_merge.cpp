// Runs ../merge_kernel.cpp on the AscendC CPU model (kernel_operator.h beside this file),
// one core after another, on operands written by tests/kernels/test_npu.py:
//   DIR/meta.txt     dtype total_rows head_dim tile_rows rows_per_core used_cores lse_len
//   DIR/acc.bin      float32 [rows * D]       (updated in place)
//   DIR/out.bin      out_blk [rows * D] in dtype 0 f32, 1 f16, 2 bf16
//   DIR/lse.bin      float32 [lse_len]       (updated in place)
//   DIR/lse_blk.bin  float32 [lse_len]
// Also checks that every core allocates exactly RingspMergeUbBytes of UB, the figure the
// host's tiling relies on.
//   g++ -std=c++17 -O1 -I csrc/ascend/cpu_model csrc/ascend/cpu_model/run_merge.cpp -o run_merge
#define RINGSP_CPU_MODEL 1
#include "../merge_kernel.cpp"

#include <string>
#include <vector>

namespace {

std::vector<uint8_t> Read(const std::string& path, size_t bytes) {
  std::vector<uint8_t> data(bytes);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr || std::fread(data.data(), 1, bytes, f) != bytes) AscendC::Fail("cannot read an input file");
  std::fclose(f);
  return data;
}

void Write(const std::string& path, const std::vector<uint8_t>& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(data.data(), 1, data.size(), f) != data.size()) AscendC::Fail("cannot write");
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) AscendC::Fail("usage: run_merge DIR");
  const std::string dir = argv[1];
  unsigned dtype = 0;
  unsigned long long rows = 0, d = 0, tile = 0, perCore = 0, cores = 0, lseLen = 0;
  FILE* meta = std::fopen((dir + "/meta.txt").c_str(), "r");
  if (meta == nullptr ||
      std::fscanf(meta, "%u %llu %llu %llu %llu %llu %llu", &dtype, &rows, &d, &tile, &perCore, &cores, &lseLen) != 7)
    AscendC::Fail("cannot read meta.txt");
  std::fclose(meta);
  const size_t elem = dtype == RINGSP_MERGE_F32 ? 4 : 2;
  auto acc = Read(dir + "/acc.bin", rows * d * 4);
  auto out = Read(dir + "/out.bin", rows * d * elem);
  auto lse = Read(dir + "/lse.bin", lseLen * 4);
  auto lseBlk = Read(dir + "/lse_blk.bin", lseLen * 4);
  const RingspMergeTiling tiling{rows, static_cast<uint32_t>(d), static_cast<uint32_t>(tile),
                                 static_cast<uint32_t>(perCore), static_cast<uint32_t>(cores)};
  for (uint64_t core = 0; core < cores; ++core) {
    AscendC::BlockIdx() = static_cast<int64_t>(core);
    GM_ADDR a = acc.data(), l = lse.data(), o = out.data(), lb = lseBlk.data();
    switch (dtype) {
      case RINGSP_MERGE_F32: ringsp_merge_rows_f32(a, l, o, lb, tiling); break;
      case RINGSP_MERGE_F16: ringsp_merge_rows_f16(a, l, o, lb, tiling); break;
      case RINGSP_MERGE_BF16: ringsp_merge_rows_bf16(a, l, o, lb, tiling); break;
      default: AscendC::Fail("unknown dtype");
    }
    if (AscendC::UbUsed() != RingspMergeUbBytes(tile, d, elem)) AscendC::Fail("UB allocated != RingspMergeUbBytes");
  }
  Write(dir + "/acc.bin", acc);
  Write(dir + "/lse.bin", lse);
  return 0;
}
