"""Triton Python backend model (BLS) joining the three Synchformer stages; copied as `1/model.py`.

It runs inside Triton's Python backend, so it imports only NumPy and `triton_python_backend_utils`
(not sync_sdk). One request holds b clips (b <= max_batch_size):

    inputs   vid (b, S, 16, 3, 224, 224) FP32, aud (b, S, 1, 128, 66) FP32   (S = the model's n_segments)
    outputs  logits (b, C) FP32, probs (b, C) FP32 softmax, and for an offset model (C = 21)
             offset_sec (b, 1) FP32 (positive = audio leads video) and class_index (b, 1) INT32

Each clip's S segments go to the audio and visual encoder models as one BLS request each, all
requests of an `execute` call at once (async), so the encoders' dynamic batchers merge clips; then
one head request per Triton request. Model names, n_segments and the offset grid come from the
`parameters` of config.pbtxt (written by sync_sdk.serving.triton_repo).
"""
import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

VIDEO_TOKENS, AUDIO_TOKENS = 8, 6


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.audio_model = params["audio_model"]
        self.visual_model = params["visual_model"]
        self.head_model = params["head_model"]
        self.n_segments = int(params["n_segments"])
        self.offsets = np.asarray(json.loads(params["offset_grid_sec"]), dtype=np.float32)
        self.cpu = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    async def _infer(self, model, inputs: dict, output: str) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=[output],
            inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()],
            preferred_memory=self.cpu)
        response = await request.async_exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, output).as_numpy()

    def _inputs(self, request):
        vid = pb_utils.get_input_tensor_by_name(request, "vid").as_numpy()
        aud = pb_utils.get_input_tensor_by_name(request, "aud").as_numpy()
        s = self.n_segments
        if vid.ndim != 6 or aud.ndim != 5 or vid.shape[1] != s or aud.shape[1] != s or len(vid) != len(aud):
            raise ValueError(f"expected vid (b,{s},16,3,224,224) and aud (b,{s},1,128,66), "
                             f"got {vid.shape} and {aud.shape}")
        return vid, aud

    async def _clip_features(self, vid: np.ndarray, aud: np.ndarray):
        """(vfeat (S,8,Dv), afeat (S,6,Da)) of one clip."""
        return await asyncio.gather(self._infer(self.visual_model, {"vid": vid}, "vfeat"),
                                    self._infer(self.audio_model, {"aud": aud}, "afeat"))

    async def _respond(self, request):
        vid, aud = self._inputs(request)
        feats = await asyncio.gather(*(self._clip_features(v, a) for v, a in zip(vid, aud)))
        b = len(feats)
        vfeat = np.stack([f[0] for f in feats]).reshape(b, self.n_segments * VIDEO_TOKENS, -1)
        afeat = np.stack([f[1] for f in feats]).reshape(b, self.n_segments * AUDIO_TOKENS, -1)
        logits = (await self._infer(self.head_model, {"vfeat": vfeat, "afeat": afeat}, "logits")).astype(np.float32)
        probs = softmax(logits)
        out = [pb_utils.Tensor("logits", logits), pb_utils.Tensor("probs", probs)]
        if logits.shape[-1] == len(self.offsets):
            k = probs.argmax(axis=-1)
            out += [pb_utils.Tensor("offset_sec", self.offsets[k].reshape(b, 1)),
                    pb_utils.Tensor("class_index", k.astype(np.int32).reshape(b, 1))]
        return pb_utils.InferenceResponse(output_tensors=out)

    async def execute(self, requests):
        results = await asyncio.gather(*(self._respond(r) for r in requests), return_exceptions=True)
        return [r if not isinstance(r, BaseException) else
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(r) or repr(r)))
                for r in results]
