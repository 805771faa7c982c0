// Preloaded into the gateway by the load test (NODE_OPTIONS=--require). On SIGUSR2 it collects all
// garbage, then prints the memory figures on stderr: the test can then tell memory the gateway still
// holds from garbage that simply has not been collected yet on an idle process. Several full
// collections in a row also let V8 shrink its heap, as its memory reducer does on an idle process
// over time; one leaves the pages the load made it grow.
const v8 = require("node:v8")
const vm = require("node:vm")

v8.setFlagsFromString("--expose-gc")
const collectGarbage = vm.runInNewContext("gc")
process.on("SIGUSR2", () => {
  for (let round = 0; round < 4; round++) collectGarbage()
  const { rss, heapUsed } = process.memoryUsage()
  process.stderr.write(`memory-probe rss=${rss} heapUsed=${heapUsed}\n`)
})
