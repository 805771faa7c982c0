/**
 * Log level names as both programs take them (the original tool's Python names, plus WARN and
 * FATAL), to Effect's levels. (Imported by sub-path: the client loads only the parts of effect it uses.)
 */
import * as LogLevel from "effect/LogLevel"

export const logLevelOf = {
  TRACE: LogLevel.Trace,
  DEBUG: LogLevel.Debug,
  INFO: LogLevel.Info,
  WARNING: LogLevel.Warning,
  WARN: LogLevel.Warning,
  ERROR: LogLevel.Error,
  CRITICAL: LogLevel.Fatal,
  FATAL: LogLevel.Fatal,
  NONE: LogLevel.None,
} as const satisfies Record<string, LogLevel.LogLevel>

export type LogLevelName = keyof typeof logLevelOf
