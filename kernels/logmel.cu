// Log-mel features of 16-kHz audio segments (SPEC 1.7), launched by sync_sdk/gpu.py via CuPy RawModule.
//
//   frame_segments : pcm + segment starts -> (n_seg * n_frames, n_fft) windowed STFT frames, each
//                    segment reflect-padded on its own (centre=True), periodic Hann 400 zero-padded to 1024
//   (cuFFT R2C through cupy, in place of a kernel) -> (n_seg * n_frames, n_bins) complex64
//   mel_log_norm   : |X|^2 -> 128 triangular mel bands -> log(x + eps) -> pad/cut to n_out frames with 0.0
//                    -> (x - mean) / (2 std), written as (n_seg, 1, n_mels, n_out)
//
// sync_sdk/gpu_plan.py holds the host tables and `emulate_log_mel`, the NumPy twin of these kernels.
// No headers: the file compiles with NVRTC (CuPy) and with `nvcc -cubin` (CI).

// Index into a length-n signal of position j of its reflect-padded version (|pad| < n).
__device__ __forceinline__ int reflect_index(int j, int n)
{
    if (j < 0) j = -j;
    if (j >= n) j = 2 * (n - 1) - j;
    return j;
}

// One thread per (segment, frame, tap), grid-stride. Frame k, tap t of segment s reads
// pcm[starts[s] + reflect(k * hop + t - n_fft / 2)] times window[t]; taps outside [win_lo, win_hi) are 0.
extern "C" __global__ void frame_segments(
    const float* __restrict__ pcm,            // samples; segment s is pcm[starts[s] .. starts[s] + seg_len)
    const long long* __restrict__ starts,     // (n_seg,)
    const float* __restrict__ window,         // (n_fft,) window zero-padded to n_fft
    float* __restrict__ frames,               // (n_seg * n_frames, n_fft)
    int n_seg, int seg_len, int n_frames, int n_fft, int hop, int win_lo, int win_hi)
{
    const long long total = (long long)n_seg * n_frames * n_fft;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int t = (int)(i % n_fft);
        const long long row = i / n_fft;
        float v = 0.0f;
        if (t >= win_lo && t < win_hi) {
            const int k = (int)(row % n_frames);
            const int s = (int)(row / n_frames);
            const int j = reflect_index(k * hop + t - n_fft / 2, seg_len);
            v = __ldg(pcm + starts[s] + j) * __ldg(window + t);
        }
        frames[i] = v;
    }
}

// Block (k, s) = output frame k of segment s; thread m = mel band m (blockDim.x == n_mels).
// Dynamic shared memory: n_bins floats (the power spectrum of the frame).
// Band m sums weights[offset[m] + i] * power[lo[m] + i] for i < length[m] (float32, in bin order).
extern "C" __global__ void mel_log_norm(
    const float2* __restrict__ spec,          // (n_seg * n_frames, n_bins) complex64
    const int* __restrict__ band_lo,          // (n_mels,)
    const int* __restrict__ band_len,         // (n_mels,)
    const int* __restrict__ band_off,         // (n_mels,)
    const float* __restrict__ band_w,         // (sum of band_len,)
    float* __restrict__ out,                  // (n_seg, 1, n_mels, n_out)
    int n_frames, int n_bins, int n_mels, int n_out, float eps, float mean, float denom)
{
    extern __shared__ float power[];
    const int k = blockIdx.x;
    const int s = blockIdx.y;
    const int m = threadIdx.x;
    float v = 0.0f;                           // log-domain padding value of frames k >= n_frames
    if (k < n_frames) {
        const float2* row = spec + ((long long)s * n_frames + k) * n_bins;
        for (int b = threadIdx.x; b < n_bins; b += blockDim.x) {
            const float2 z = row[b];
            power[b] = z.x * z.x + z.y * z.y;
        }
        __syncthreads();
        if (m < n_mels) {
            const int lo = band_lo[m];
            const int len = band_len[m];
            const float* w = band_w + band_off[m];
            float acc = 0.0f;
            for (int i = 0; i < len; ++i) acc += w[i] * power[lo + i];
            v = logf(acc + eps);
        }
    }
    if (m < n_mels) out[((long long)s * n_mels + m) * n_out + k] = (v - mean) / denom;
}
