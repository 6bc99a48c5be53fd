"""Seeded synthetic audio-visual clips whose synchronisation shows only at sparse moments.

A *scene* (`scene`) is a small world on a time axis in seconds: a background, silent distractors
moving smoothly, and sound sources whose visual moments are sparse and irregular (a ball bouncing on
a floor, an object hitting a bar, two shapes clapping together, a shape flashing) with a sound at
each such moment, plus sounds with no visual source, background noise/hum and silent stretches. The
`beep_flash` kind is the broadcast A/V-sync test pattern: a shape flashes while a tone sounds, at
irregular intervals, with varied shapes, sizes, positions, brightness, tones and durations.

A *clip* (`clips`) is two windows on that world: video frame k shows world time k/25 s; audio sample
n carries world time n/16000 + offset_sec. So with a positive offset (audio leads video) the sound
of an event seen at video time t sits at audio time t - offset_sec. Frames are uint8 RGB
(T, H, W, 3) at 25 fps with shortest side 256; audio is float32 mono at 16 kHz. Everything is a
function of the seed.

visuals  drawing primitives, backgrounds and the moving visual sources
sounds   each source's timbre, background noise and hum
scene    Scene, make_scene, scene_kind, event_times
clips    generate_clip, other_seed, write_clip
"""
from sync_sdk.synthetic.clips import generate_clip, other_seed, write_clip
from sync_sdk.synthetic.scene import KINDS, event_times, make_scene, scene_kind

__all__ = ["KINDS", "event_times", "generate_clip", "make_scene", "other_seed", "scene_kind", "write_clip"]
