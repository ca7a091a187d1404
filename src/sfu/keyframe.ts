/**
 * Keyframe detection from the first bytes of an RTP payload. Only codec headers are read,
 * so it also works on E2EE payloads whose leading header bytes are kept in the clear.
 */
export function isKeyframe(codec: string, payload: Buffer): boolean {
  switch (codec) {
    case 'vp8':
      return isVp8Keyframe(payload);
    case 'vp9':
      return isVp9Keyframe(payload);
    case 'h264':
      return isH264Keyframe(payload);
    default:
      return false;
  }
}

/** RFC 7741: descriptor, then on the first partition of a frame the VP8 frame tag (P bit 0 = key). */
function isVp8Keyframe(p: Buffer): boolean {
  if (p.length < 1) return false;
  const b0 = p[0]!;
  const startOfPartition = (b0 & 0x10) !== 0;
  const partitionIndex = b0 & 0x07;
  if (!startOfPartition || partitionIndex !== 0) return false;
  let i = 1;
  if (b0 & 0x80) {
    if (p.length < 2) return false;
    const x = p[1]!;
    i = 2;
    if (x & 0x80) i += (p[i]! & 0x80) !== 0 ? 2 : 1; // PictureID, 7 or 15 bits
    if (x & 0x40) i += 1; // TL0PICIDX
    if (x & 0x30) i += 1; // TID / KEYIDX
  }
  if (i >= p.length) return false;
  return (p[i]! & 0x01) === 0;
}

/** draft-ietf-payload-vp9: B (start of frame) set and P (inter-picture predicted) clear. */
function isVp9Keyframe(p: Buffer): boolean {
  if (p.length < 1) return false;
  const b0 = p[0]!;
  const interPredicted = (b0 & 0x40) !== 0;
  const beginning = (b0 & 0x08) !== 0;
  return beginning && !interPredicted;
}

/** RFC 6184: an IDR slice (5) or SPS (7), possibly inside STAP-A (24) or the start of FU-A (28). */
function isH264Keyframe(p: Buffer): boolean {
  if (p.length < 2) return false;
  const type = p[0]! & 0x1f;
  if (type === 5 || type === 7) return true;
  if (type === 28) {
    const fuHeader = p[1]!;
    const start = (fuHeader & 0x80) !== 0;
    const inner = fuHeader & 0x1f;
    return start && (inner === 5 || inner === 7);
  }
  if (type === 24) {
    let i = 1;
    while (i + 2 < p.length) {
      const size = p.readUInt16BE(i);
      const nalType = p[i + 2]! & 0x1f;
      if (nalType === 5 || nalType === 7) return true;
      i += 2 + size;
    }
  }
  return false;
}
