/**
 * Token-bucket rate limiting, as pure functions of the time: a bucket holds up to `capacity`
 * requests and refills continuously at `refillPerSecond`.
 */

export interface BucketPolicy {
  readonly capacity: number
  readonly refillPerSecond: number
}

export interface Bucket {
  readonly tokens: number
  /** Milliseconds (any clock, as long as it is the same one every time). */
  readonly updatedAt: number
}

export interface Decision {
  readonly bucket: Bucket
  readonly allowed: boolean
  /** Whole seconds until one request would be allowed again (0 when allowed). */
  readonly retryAfterSeconds: number
}

const refill = (bucket: Bucket | undefined, policy: BucketPolicy, now: number): number => {
  if (bucket === undefined) return policy.capacity
  const elapsed = Math.max(0, now - bucket.updatedAt) / 1000
  return Math.min(policy.capacity, bucket.tokens + elapsed * policy.refillPerSecond)
}

/** Take one token if there is one. */
export const take = (bucket: Bucket | undefined, policy: BucketPolicy, now: number): Decision => {
  const tokens = refill(bucket, policy, now)
  if (tokens >= 1)
    return { bucket: { tokens: tokens - 1, updatedAt: now }, allowed: true, retryAfterSeconds: 0 }
  return {
    bucket: { tokens, updatedAt: now },
    allowed: false,
    retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / policy.refillPerSecond)),
  }
}

/** A bucket that has refilled completely is the same as no bucket, so it can be forgotten. */
export const isIdle = (bucket: Bucket, policy: BucketPolicy, now: number): boolean =>
  refill(bucket, policy, now) >= policy.capacity

/**
 * The key a client is limited under: its IPv4 address, or the /64 of an IPv6 address (one host
 * usually holds a whole /64, so per-address limits would not limit it).
 */
export const rateLimitKey = (address: string): string => {
  const unmapped = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "")
  if (!unmapped.includes(":")) return unmapped
  const withoutZone = unmapped.split("%")[0] ?? unmapped
  const [head = "", tail] = withoutZone.toLowerCase().split("::")
  const headGroups = head === "" ? [] : head.split(":")
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":")
  const missing = Math.max(0, 8 - headGroups.length - tailGroups.length)
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array(missing).fill("0"), ...tailGroups]
  return `${groups
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`
}
