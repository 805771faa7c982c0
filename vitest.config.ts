import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The suites run dist/: build it first when src/ is newer (test/support/buildDist.ts).
    globalSetup: ["test/support/buildDist.ts"],
    // The load test runs on its own afterwards (vitest.load.config.ts).
    exclude: ["test/load/**", "**/node_modules/**"],
    // Suites start real gateways, children and ssh clients: give them room on a 2-core machine.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
})
