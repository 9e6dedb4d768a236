"""Glue adapter for the parity kit (``check_parity.py --glue all --func tests/support/parity_adapter.py:glue``).

It maps the kit's fixture inputs onto our motion and face-geometry functions and returns the
outputs under the kit's names. It only translates names and array types: every number comes from
``engines.motion`` and ``app.face``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from app.face import crop as face_crop
from app.face.layout import LANDMARKS_203
from app.face.ratios import eye_open_ratios, lip_open_ratio
from engines import motion


def parity_dir() -> Path:
    """The parity kit: $LIVEPORTRAIT_PARITY_DIR, else ../shared/parity beside the repository."""
    return Path(os.environ.get("LIVEPORTRAIT_PARITY_DIR", Path(__file__).resolve().parents[3] / "shared" / "parity"))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _headpose(inp, nets):
    return {"degrees": _np(motion.headpose_bins_to_degrees(_t(inp["logits"])))}


def _rotation(inp, nets):
    a = _t(inp["pitch_yaw_roll_deg"])
    return {"rot": _np(motion.rotation_matrix(a[:, 0], a[:, 1], a[:, 2]))}


def _transform_keypoint(inp, nets):
    raw = {k[4:]: _t(v) for k, v in inp.items() if k.startswith("raw_")}
    refined = motion.refine_motion_output(raw)
    syn = motion.KeypointInfo(**{k[4:]: _t(v) for k, v in inp.items() if k.startswith("syn_")})
    # Raw logits go straight into Eqn. 2 as well: the bins->degrees step passes degrees through.
    raw_rot = motion.rotation_matrix(*(motion.headpose_bins_to_degrees(raw[k]) for k in ("pitch", "yaw", "roll")))
    out = {
        "kp_from_raw": motion.transform_keypoints(raw["kp"], raw_rot, raw["exp"], raw["scale"], raw["t"]),
        "kp_from_refined": motion.keypoints_from_info(refined),
        "kp_from_syn": motion.keypoints_from_info(syn),
    }
    for name in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        out[f"refined_{name}"] = getattr(refined, name)
    return {k: _np(v) for k, v in out.items()}


def _stitching_retargeting(inp, nets):
    x_s, x_d = _t(inp["kp_source"]), _t(inp["kp_driving"])
    with torch.no_grad():
        out = {
            "stitching_kp_driving_new": motion.apply_stitching(nets["stitching"], x_s, x_d),
            "stitch_raw_delta": motion.stitching_offsets(nets["stitching"], x_s, x_d),
            "retarget_eye_delta": motion.eye_retarget_delta(nets["eye"], x_s, _t(inp["eye_close_ratio"])),
            "retarget_lip_delta": motion.lip_retarget_delta(nets["lip"], x_s, _t(inp["lip_close_ratio"])),
        }
    return {k: _np(v) for k, v in out.items()}


def _ratios(inp, nets):
    lmk = inp["lmk203"]
    eyes = eye_open_ratios(lmk, LANDMARKS_203)
    src, drv = lmk[6], lmk[5]
    src_eyes, src_lip = _t(eye_open_ratios(src, LANDMARKS_203)), _t(lip_open_ratio(src, LANDMARKS_203))
    drv_left_eye = _t(eye_open_ratios(drv, LANDMARKS_203)[:, :1])
    drv_lip = _t(lip_open_ratio(drv, LANDMARKS_203))
    return {
        "eye_close_ratio": eyes,
        "eye_close_ratio_with_target": np.concatenate([eyes, inp["target_eye_ratio"]], axis=1),
        "lip_close_ratio": lip_open_ratio(lmk, LANDMARKS_203),
        "combined_eye_ratio_src6_drv5": _np(motion.combined_eye_ratios(src_eyes, drv_left_eye)),
        "combined_lip_ratio_src6_drv5": _np(motion.combined_lip_ratios(src_lip, drv_lip)),
        "combined_lip_ratio_src6_zero": _np(motion.combined_lip_ratios(src_lip, torch.zeros(1, 1))),
    }


def _crop_paste(inp, nets):
    import cv2

    image = inp["image_u8"]
    out: dict[str, list] = {k: [] for k in ("M_o2c_512", "M_c2o_512", "pt_crop_512", "M_o2c_224", "M_c2o_224",
                                            "img_crop_128")}
    for lmk in inp["lmk203_orig"]:
        t512 = face_crop.crop_transform(lmk, LANDMARKS_203, face_crop.AVATAR_CROP)
        t224 = face_crop.crop_transform(lmk, LANDMARKS_203, face_crop.CropConfig(dsize=224, scale=1.5, vy_ratio=-0.1))
        t128 = face_crop.crop_transform(lmk, LANDMARKS_203, face_crop.CropConfig(dsize=128, scale=2.3, vy_ratio=-0.125))
        out["M_o2c_512"].append(t512.M_o2c)
        out["M_c2o_512"].append(t512.M_c2o)
        out["pt_crop_512"].append(face_crop.transform_points(lmk, t512.M_o2c))
        out["M_o2c_224"].append(t224.M_o2c)
        out["M_c2o_224"].append(t224.M_c2o)
        out["img_crop_128"].append(face_crop.warp_to_crop(image, t128, precise=True))
    result = {k: np.stack(v) for k, v in out.items()}
    mask_template = cv2.imread(str(parity_dir() / "data" / "mask_template.png"), cv2.IMREAD_COLOR)
    orig = inp["paste_orig_u8"]
    paste = face_crop.prepare_paste_mask(mask_template, inp["paste_M_c2o"], (orig.shape[1], orig.shape[0]))
    result["paste_mask_ori"] = paste.mask
    result["paste_result_u8"] = face_crop.paste_back(inp["paste_crop_u8"], inp["paste_M_c2o"], orig, paste)
    return result


def _pipeline_motion(inp, nets):
    source = motion.KeypointInfo(**{k[4:]: _t(v) for k, v in inp.items() if k.startswith("src_") and "lmk" not in k})
    x_s = motion.keypoints_from_info(source)
    R_s = source.rotation()
    frames = [motion.DrivingMotion(R=_t(r), exp=_t(e), scale=_t(s), t=_t(t))
              for r, e, s, t in zip(inp["drv_R"], inp["drv_exp"], inp["drv_scale"], inp["drv_t"], strict=False)]
    reference = frames[0]
    src_lip = _t(lip_open_ratio(inp["src_lmk203_for_lip"], LANDMARKS_203))
    # the live animator's call (app/animation/animator.py): R_s given, controls (here neutral: the official
    # pipeline has none) and the device form without host reads
    live = {"R_s": R_s, "controls": motion.MotionControls.make("cpu"), "check_finite": False}
    with torch.no_grad():
        lip_delta = motion.lip_normalization_delta(nets["lip"], x_s, src_lip)
        x_d_ref = motion.relative_keypoints(source, R_s, reference, reference)
        multiplier = motion.expression_motion_multiplier(x_s, x_d_ref)
        pose = [motion.animate_keypoints(source, x_s, f, reference, stitching_net=nets["stitching"],
                                         lip_delta=lip_delta, **live) for f in frames]
        expr = [motion.animate_keypoints(source, x_s, f, reference, stitching_net=nets["stitching"],
                                         option="expression-friendly", x_d_ref=x_d_ref,
                                         expression_multiplier=multiplier, lip_delta=lip_delta, **live)
                for f in frames]
    return {
        "pose_friendly_before_stitch": np.stack([_np(m.before_stitching) for m in pose]),
        "pose_friendly_final": np.stack([_np(m.final) for m in pose]),
        "expr_friendly_before_stitch": np.stack([_np(m.before_stitching) for m in expr]),
        "expr_friendly_final": np.stack([_np(m.final) for m in expr]),
        "R_s": _np(R_s),
        "x_s": _np(x_s),
        "motion_multiplier": np.array([multiplier]),
        "combined_lip_ratio_before": _np(motion.combined_lip_ratios(src_lip, torch.zeros(1, 1))),
        "lip_delta_before_animation": None if lip_delta is None else _np(lip_delta),
    }


def _animal_motion(inp, nets):
    """The animal pipeline's formula: the source as the kit gives it (canonical keypoints and scale;
    only those two enter the formula), frame 0 as the reference."""
    source_kp, source_scale = _t(inp["src_kp"]), _t(inp["src_scale"])
    zeros = torch.zeros_like(source_scale)
    source = motion.KeypointInfo(pitch=zeros, yaw=zeros, roll=zeros, t=torch.zeros(1, 3),
                                 exp=torch.zeros_like(source_kp), scale=source_scale, kp=source_kp)
    x_s = _t(inp["x_s"])
    frames = [motion.DrivingMotion(R=_t(r), exp=_t(e), scale=torch.ones(1, 1), t=_t(t))
              for r, e, t in zip(inp["drv_R"], inp["drv_exp"], inp["drv_t"], strict=True)]
    with torch.no_grad():
        x_d_ref = motion.animal_keypoints(source, frames[0])
        multiplier = motion.expression_motion_multiplier(x_s, x_d_ref)
        out = {}
        for stitched in (False, True):
            for strength, suffix in ((1.0, "m1p0"), (1.75, "m1p75")):
                x_d = [motion.animate_animal_keypoints(source, x_s, f, x_d_ref, multiplier,
                                                       stitching_net=nets["stitching"] if stitched else None,
                                                       driving_multiplier=strength, check_finite=False)
                       for f in frames]
                out[f"x_d_{'stitched' if stitched else 'plain'}_{suffix}"] = np.stack([_np(x) for x in x_d])
    out["motion_multiplier"] = np.array([multiplier])
    return out


_GLUE = {
    "glue_headpose": _headpose,
    "glue_rotation": _rotation,
    "glue_transform_keypoint": _transform_keypoint,
    "glue_stitching_retargeting": _stitching_retargeting,
    "glue_ratios": _ratios,
    "glue_crop_paste": _crop_paste,
    "glue_pipeline_motion": _pipeline_motion,
    "glue_animal_motion": _animal_motion,      # checked by name only (`--glue glue_animal_motion`)
}


def glue(inputs: dict[str, np.ndarray], nets: dict | None, fixture: str) -> dict[str, np.ndarray]:
    """The kit's ``--func`` entry point."""
    return _GLUE[fixture](inputs, nets)
