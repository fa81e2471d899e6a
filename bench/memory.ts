/**
 * Resident memory of a process, read from /proc/PID/status (Linux only).
 * The benchmark reads it for its children from outside, because Deno
 * requires --allow-all to read /proc/self, and the children run with the
 * start task's permission set.
 *
 * @module
 */

/** Lines of /proc/PID/status, in KiB. */
export interface ResidentMemory {
  vmRssKb: number;
  vmHwmKb: number;
  rssAnonKb: number;
  rssFileKb: number;
  /** Resident pages mapped from the process's executable (the deno binary), from smaps. */
  executableRssKb: number;
}

/** Reads VmRSS, VmHWM, RssAnon and RssFile of process `pid`, and its executable's share. */
export function readResidentMemory(pid: number): ResidentMemory {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(status);
    if (match === null) throw new Error(`/proc/${pid}/status has no ${name} line`);
    return Number.parseInt(match[1], 10);
  };
  return {
    vmRssKb: field("VmRSS"),
    vmHwmKb: field("VmHWM"),
    rssAnonKb: field("RssAnon"),
    rssFileKb: field("RssFile"),
    executableRssKb: readExecutableRssKb(pid),
  };
}

/** Sums the `Rss:` lines of /proc/PID/smaps over the mappings of the process's executable. */
function readExecutableRssKb(pid: number): number {
  const executable = Deno.readLinkSync(`/proc/${pid}/exe`);
  let inExecutable = false;
  let totalKb = 0;
  for (const line of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    // A mapping starts with "start-end perms offset dev inode", then the path if there is one.
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping !== null) {
      inExecutable = mapping[1] === executable;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    if (rss !== null && inExecutable) totalKb += Number.parseInt(rss[1], 10);
  }
  return totalKb;
}
