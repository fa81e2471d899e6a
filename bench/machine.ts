/**
 * The machine a benchmark ran on, read from /proc and the tools' own
 * version reports (Linux only).
 *
 * @module
 */

import type { TestCluster } from "../tests/support/postgres.ts";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  deno: string;
  v8: string;
  postgres: string;
  /** 1-minute load average when the benchmark started, to show other load on the machine. */
  loadAverage: number;
}

export async function describeMachine(cluster: TestCluster): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
  const models = [...cpuinfo.matchAll(/^model name\s*:\s*(.+)$/gm)].map((match) => match[1]);
  const meminfo = await Deno.readTextFile("/proc/meminfo");
  const memTotalKb = Number.parseInt(/^MemTotal:\s+(\d+) kB$/m.exec(meminfo)?.[1] ?? "0", 10);
  const osRelease = await Deno.readTextFile("/etc/os-release").catch(() => "");
  return {
    cpu: models[0] ?? "unknown (no model name in /proc/cpuinfo)",
    cores: models.length || navigator.hardwareConcurrency,
    memoryGiB: memTotalKb / 1024 / 1024,
    kernel: (await Deno.readTextFile("/proc/sys/kernel/osrelease")).trim(),
    os: /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(osRelease)?.[1] ?? "unknown",
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    postgres: (await cluster.sql("SHOW server_version")).trim(),
    loadAverage: await readLoadAverage(),
  };
}

/** Returns the 1-minute load average from /proc/loadavg. */
export async function readLoadAverage(): Promise<number> {
  const loadavg = await Deno.readTextFile("/proc/loadavg");
  return Number.parseFloat(loadavg.split(" ")[0]);
}
