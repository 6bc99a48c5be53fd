// Decoded uint8 RGB frames -> the visual encoder's input, launched by sync_sdk/gpu.py via CuPy RawModule.
//
//   crop_lut_{f32,f16}        : centre crop of frames that already have their shortest side at 256
//                               (or were cropped on the host), then the 256-entry table (SPEC 1.6)
//   resize_crop_lut_{f32,f16} : separable resize to shortest side 256 with host-made taps (bicubic, see
//                               gpu_plan.resize_taps; only the crop window is computed), round to uint8,
//                               then the table
//
// Input  src (T, H, W, 3) uint8; output frame f reads src frame frame_index[f].
// Output (F, 3, size, size) in float32 or float16 (stored as its 16-bit pattern: the table holds the
// fp16 values, so no conversion happens on the device). F = n_segments * 16 gives (n, 16, 3, 224, 224).
// sync_sdk/gpu_plan.py holds the host tables and `emulate_frames`, the NumPy twin of these kernels.
// No headers: the file compiles with NVRTC (CuPy) and with `nvcc -cubin` (CI).

template <typename T> struct Vec4;
template <> struct Vec4<float> { typedef float4 type; };
template <> struct Vec4<unsigned short> { typedef ushort4 type; };

// Loads the 256-entry table into shared memory (every thread of the block must call it).
template <typename T>
__device__ __forceinline__ void load_lut(const T* __restrict__ lut, T* lut_s)
{
    for (int i = threadIdx.x; i < 256; i += blockDim.x) lut_s[i] = lut[i];
    __syncthreads();
}

// One thread per 4 adjacent output pixels of one row (size % 4 == 0), grid-stride: 12 source bytes in,
// one 4-wide vector store per colour plane.
template <typename T>
__device__ void crop_lut(const unsigned char* __restrict__ src, const int* __restrict__ frame_index,
                         const T* __restrict__ lut, T* __restrict__ out,
                         int n_out, int h, int w, int top, int left, int size)
{
    __shared__ T lut_s[256];
    load_lut(lut, lut_s);
    typedef typename Vec4<T>::type V;
    const int quads = size / 4;
    const long long per_frame = (long long)size * quads;
    const long long total = (long long)n_out * per_frame;
    const long long plane = (long long)size * size;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int f = (int)(i / per_frame);
        const int r = (int)(i % per_frame);
        const int y = r / quads;
        const int x = (r % quads) * 4;
        const unsigned char* p = src + (((long long)frame_index[f] * h + top + y) * w + left + x) * 3;
        unsigned char px[12];
#pragma unroll
        for (int b = 0; b < 12; ++b) px[b] = p[b];
        T* o = out + (long long)f * 3 * plane + (long long)y * size + x;
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            V v;
            v.x = lut_s[px[c]];
            v.y = lut_s[px[3 + c]];
            v.z = lut_s[px[6 + c]];
            v.w = lut_s[px[9 + c]];
            *reinterpret_cast<V*>(o + c * plane) = v;
        }
    }
}

// One thread per output pixel (y, x) of the crop window, grid-stride. Per channel:
// acc = sum_i row_w[y, i] * (sum_j col_w[x, j] * src[row_first[y] + i, col_first[x] + j, c]),
// float32 in that order, rounded half-to-even, clamped to 0..255, then the table.
template <typename T>
__device__ void resize_crop_lut(const unsigned char* __restrict__ src, const int* __restrict__ frame_index,
                                const T* __restrict__ lut,
                                const int* __restrict__ row_first, const int* __restrict__ row_count,
                                const float* __restrict__ row_w, int row_taps,
                                const int* __restrict__ col_first, const int* __restrict__ col_count,
                                const float* __restrict__ col_w, int col_taps,
                                T* __restrict__ out, int n_out, int h, int w, int size)
{
    __shared__ T lut_s[256];
    load_lut(lut, lut_s);
    const long long plane = (long long)size * size;
    const long long total = (long long)n_out * plane;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int f = (int)(i / plane);
        const int r = (int)(i % plane);
        const int y = r / size;
        const int x = r % size;
        const unsigned char* frame = src + (long long)frame_index[f] * h * w * 3;
        const int y0 = row_first[y], ny = row_count[y];
        const int x0 = col_first[x], nx = col_count[x];
        const float* wy = row_w + (long long)y * row_taps;
        const float* wx = col_w + (long long)x * col_taps;
        float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f;
        for (int a = 0; a < ny; ++a) {
            const unsigned char* p = frame + ((long long)(y0 + a) * w + x0) * 3;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
            for (int b = 0; b < nx; ++b) {
                const float wb = wx[b];
                s0 += wb * (float)p[3 * b];
                s1 += wb * (float)p[3 * b + 1];
                s2 += wb * (float)p[3 * b + 2];
            }
            const float wa = wy[a];
            acc0 += wa * s0;
            acc1 += wa * s1;
            acc2 += wa * s2;
        }
        T* o = out + (long long)f * 3 * plane + (long long)y * size + x;
        o[0] = lut_s[min(max(__float2int_rn(acc0), 0), 255)];
        o[plane] = lut_s[min(max(__float2int_rn(acc1), 0), 255)];
        o[2 * plane] = lut_s[min(max(__float2int_rn(acc2), 0), 255)];
    }
}

extern "C" __global__ void crop_lut_f32(const unsigned char* src, const int* frame_index, const float* lut,
                                        float* out, int n_out, int h, int w, int top, int left, int size)
{
    crop_lut<float>(src, frame_index, lut, out, n_out, h, w, top, left, size);
}

extern "C" __global__ void crop_lut_f16(const unsigned char* src, const int* frame_index,
                                        const unsigned short* lut, unsigned short* out,
                                        int n_out, int h, int w, int top, int left, int size)
{
    crop_lut<unsigned short>(src, frame_index, lut, out, n_out, h, w, top, left, size);
}

extern "C" __global__ void resize_crop_lut_f32(
    const unsigned char* src, const int* frame_index, const float* lut,
    const int* row_first, const int* row_count, const float* row_w, int row_taps,
    const int* col_first, const int* col_count, const float* col_w, int col_taps,
    float* out, int n_out, int h, int w, int size)
{
    resize_crop_lut<float>(src, frame_index, lut, row_first, row_count, row_w, row_taps,
                           col_first, col_count, col_w, col_taps, out, n_out, h, w, size);
}

extern "C" __global__ void resize_crop_lut_f16(
    const unsigned char* src, const int* frame_index, const unsigned short* lut,
    const int* row_first, const int* row_count, const float* row_w, int row_taps,
    const int* col_first, const int* col_count, const float* col_w, int col_taps,
    unsigned short* out, int n_out, int h, int w, int size)
{
    resize_crop_lut<unsigned short>(src, frame_index, lut, row_first, row_count, row_w, row_taps,
                                    col_first, col_count, col_w, col_taps, out, n_out, h, w, size);
}
