import { defineConfig } from "vitest/config"

// The load test runs alone, after the other suites: it uses both cores for a while, which would
// distort their timing, and theirs would distort its figures.
export default defineConfig({
  test: {
    include: ["test/load/**/*.test.ts"],
    // The suites run dist/: build it first when src/ is newer (test/support/buildDist.ts).
    globalSetup: ["test/support/buildDist.ts"],
    testTimeout: 240_000,
    hookTimeout: 60_000,
    pool: "forks",
    fileParallelism: false,
  },
})
