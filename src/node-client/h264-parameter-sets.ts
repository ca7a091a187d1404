/** Real H.264 SPS and PPS NAL units for the synthetic source, and the SPS fields a test reads back. */
import { BitReader } from './bit-reader.ts';
import { BitWriter } from './bit-writer.ts';

/** A real SPS: Constrained Baseline, level 3.1 (profile-level-id 42e01f), width × height. */
export function buildSps(width: number, height: number): Buffer {
  const w = new BitWriter();
  w.u(8, 66); // profile_idc: Baseline
  w.u(8, 0xe0); // constraint_set0..2 flags
  w.u(8, 31); // level_idc 3.1
  w.ue(0); // seq_parameter_set_id
  w.ue(0); // log2_max_frame_num_minus4
  w.ue(2); // pic_order_cnt_type
  w.ue(1); // max_num_ref_frames
  w.u(1, 0); // gaps_in_frame_num_value_allowed_flag
  const mbW = Math.ceil(width / 16);
  const mbH = Math.ceil(height / 16);
  w.ue(mbW - 1); // pic_width_in_mbs_minus1
  w.ue(mbH - 1); // pic_height_in_map_units_minus1
  w.u(1, 1); // frame_mbs_only_flag
  w.u(1, 1); // direct_8x8_inference_flag
  const cropRight = (mbW * 16 - width) / 2;
  const cropBottom = (mbH * 16 - height) / 2;
  if (cropRight > 0 || cropBottom > 0) {
    w.u(1, 1);
    w.ue(0);
    w.ue(cropRight);
    w.ue(0);
    w.ue(cropBottom);
  } else {
    w.u(1, 0); // frame_cropping_flag
  }
  w.u(1, 0); // vui_parameters_present_flag
  return Buffer.concat([Buffer.from([0x67]), w.finish()]); // NRI 3, type 7
}

export function buildPps(): Buffer {
  const w = new BitWriter();
  w.ue(0); // pic_parameter_set_id
  w.ue(0); // seq_parameter_set_id
  w.u(1, 0); // entropy_coding_mode_flag (CAVLC)
  w.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
  w.ue(0); // num_slice_groups_minus1
  w.ue(0); // num_ref_idx_l0_default_active_minus1
  w.ue(0); // num_ref_idx_l1_default_active_minus1
  w.u(1, 0); // weighted_pred_flag
  w.u(2, 0); // weighted_bipred_idc
  w.se(0); // pic_init_qp_minus26
  w.se(0); // pic_init_qs_minus26
  w.se(0); // chroma_qp_index_offset
  w.u(1, 1); // deblocking_filter_control_present_flag
  w.u(1, 0); // constrained_intra_pred_flag
  w.u(1, 0); // redundant_pic_cnt_present_flag
  return Buffer.concat([Buffer.from([0x68]), w.finish()]); // NRI 3, type 8
}

/** Parses the fields of an SPS NAL (with its header byte) needed to get the picture size. */
export function parseSps(nal: Buffer): { profileIdc: number; constraints: number; levelIdc: number; width: number; height: number } {
  const r = new BitReader(nal.subarray(1));
  const profileIdc = r.u(8);
  const constraints = r.u(8);
  const levelIdc = r.u(8);
  r.ue(); // sps id
  if ([100, 110, 122, 244, 44, 83, 86, 118, 128].includes(profileIdc)) throw new Error('high profiles not supported by this parser');
  r.ue(); // log2_max_frame_num_minus4
  const pocType = r.ue();
  if (pocType === 0) r.ue();
  else if (pocType === 1) throw new Error('pic_order_cnt_type 1 not supported by this parser');
  r.ue(); // max_num_ref_frames
  r.u(1);
  const mbW = r.ue() + 1;
  const mbH = r.ue() + 1;
  const frameMbsOnly = r.u(1);
  if (!frameMbsOnly) r.u(1);
  r.u(1);
  let [cl, cr, ct, cb] = [0, 0, 0, 0];
  if (r.u(1)) {
    cl = r.ue();
    cr = r.ue();
    ct = r.ue();
    cb = r.ue();
  }
  const heightUnits = frameMbsOnly ? 1 : 2;
  return {
    profileIdc,
    constraints,
    levelIdc,
    width: mbW * 16 - 2 * (cl + cr),
    height: mbH * 16 * heightUnits - 2 * heightUnits * (ct + cb),
  };
}
