/**
 * Opens the socket of one PostgreSQL connection: tries the configured hosts
 * in order, negotiates TLS the way libpq's `sslmode` does, and hands the
 * ready socket to postgres.js, which then runs the protocol on it.
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import type { DatabaseConfig, DatabaseHost, SslMode } from "./config.ts";

/** PostgreSQL's SSLRequest message: length 8, then the code 80877103. */
const SSL_REQUEST = Uint8Array.of(0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f);
const SSL_ACCEPTED = 0x53; // "S"
const SSL_REFUSED = 0x4e; // "N"

/**
 * How long a host that failed stays at the end of the order, so that a
 * standby keeps serving while the first host is down.
 */
export const FAILED_HOST_DEMOTION_MS = 30_000;

/** A failure to open a connection, with a message that names the host. */
export class ConnectError extends Error {
  /** True when TLS was required but the server or its certificate did not pass. */
  readonly tls: boolean;

  constructor(message: string, options: { cause?: unknown; tls?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.name = "ConnectError";
    this.tls = options.tls ?? false;
  }
}

/** Returns "host:port" or the socket path, for messages. */
export function describeHost(host: DatabaseHost): string {
  if (host.kind === "socket") return `${host.directory}/.s.PGSQL.${host.port}`;
  return host.hostname.includes(":")
    ? `[${host.hostname}]:${host.port}`
    : `${host.hostname}:${host.port}`;
}

export interface OpenedSocket {
  socket: net.Socket;
  host: DatabaseHost;
  tls: boolean;
}

/** Opens sockets to the configured hosts, preferring hosts that did not fail recently. */
export class SocketOpener {
  readonly #config: DatabaseConfig;
  readonly #failedAt = new Map<DatabaseHost, number>();
  readonly #open = new Set<net.Socket>();
  #connecting: DatabaseHost | undefined;

  constructor(config: DatabaseConfig) {
    this.#config = config;
  }

  /** The host a connection is being opened to right now, for timeout messages. */
  get connecting(): DatabaseHost | undefined {
    return this.#connecting;
  }

  /** Hosts in the order the next connection tries them. */
  hostOrder(now = performance.now()): DatabaseHost[] {
    const recent = (host: DatabaseHost) => {
      const failedAt = this.#failedAt.get(host);
      return failedAt !== undefined && now - failedAt < FAILED_HOST_DEMOTION_MS;
    };
    const hosts = this.#config.hosts;
    return [...hosts.filter((host) => !recent(host)), ...hosts.filter(recent)];
  }

  /**
   * Tries each host in turn until one connects, each within
   * `connect_timeout` and all before `deadline` (a `performance.now()` time).
   * Throws a {@linkcode ConnectError} that lists every host's failure.
   */
  async open(deadline: number): Promise<OpenedSocket> {
    const failures: string[] = [];
    let tlsFailure = false;
    for (const host of this.hostOrder()) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) {
        failures.push(`${describeHost(host)}: not tried, time is up`);
        continue;
      }
      const timeout = Math.min(remaining, this.#config.connectTimeoutSeconds * 1000);
      this.#connecting = host;
      try {
        const opened = await this.#openOne(host, timeout);
        this.#failedAt.delete(host);
        return opened;
      } catch (error) {
        this.#failedAt.set(host, performance.now());
        if (error instanceof ConnectError && error.tls) tlsFailure = true;
        failures.push(error instanceof Error ? error.message : String(error));
      } finally {
        this.#connecting = undefined;
      }
    }
    throw new ConnectError(failures.join("; "), { tls: tlsFailure });
  }

  /** Destroys every socket this opener made that is still open. */
  destroyAll(): void {
    for (const socket of this.#open) socket.destroy();
    this.#open.clear();
  }

  async #openOne(host: DatabaseHost, timeoutMs: number): Promise<OpenedSocket> {
    const name = describeHost(host);
    const raw = host.kind === "socket"
      ? net.connect({ path: `${host.directory}/.s.PGSQL.${host.port}` })
      : net.connect({ host: host.hostname, port: host.port });
    this.#track(raw);

    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new ConnectError(`${name}: connection timed out after ${seconds(timeoutMs)} s`));
      }, timeoutMs);
    });
    let socket: net.Socket = raw;
    try {
      await Promise.race([once(raw, "connect", name), timedOut]);
      let secured = false;
      const mode = this.#config.sslMode;
      if (mode !== "disable") {
        const accepted = await Promise.race([requestTls(raw, name), timedOut]);
        if (accepted) {
          socket = startTls(raw, host, mode, this.#config.sslRootCert);
          this.#track(socket);
          await Promise.race([once(socket, "secureConnect", name, mode), timedOut]);
          secured = true;
        } else if (mode !== "prefer") {
          throw new ConnectError(
            `${name}: the server does not support TLS, but sslmode is "${mode}": ` +
              `turn on ssl in postgresql.conf or lower sslmode`,
            { tls: true },
          );
        }
      }
      return { socket, host, tls: secured };
    } catch (error) {
      socket.destroy();
      raw.destroy();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #track(socket: net.Socket): void {
    this.#open.add(socket);
    socket.once("close", () => this.#open.delete(socket));
  }
}

function seconds(milliseconds: number): string {
  return (milliseconds / 1000).toFixed(1).replace(/\.0$/, "");
}

/** Resolves on `event`; rejects with a message naming the host on "error" or "close". */
function once(
  socket: net.Socket,
  event: "connect" | "secureConnect",
  name: string,
  mode?: SslMode,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const isTls = event === "secureConnect";
    const onEvent = () => {
      cleanUp();
      resolve();
    };
    const onError = (error: Error & { code?: string }) => {
      cleanUp();
      const hint = isTls ? tlsHint(error, mode) : "";
      const message = `${name}: ${isTls ? "TLS " : ""}${describeSocketError(error)}${hint}`;
      reject(new ConnectError(message, { cause: error, tls: isTls }));
    };
    const onClose = () => {
      cleanUp();
      reject(new ConnectError(`${name}: connection closed by the server`, { tls: isTls }));
    };
    const cleanUp = () => {
      socket.off(event, onEvent);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
    socket.on(event, onEvent);
    socket.on("error", onError);
    socket.on("close", onClose);
  });
}

/** Sends SSLRequest and returns whether the server agreed to TLS. */
function requestTls(socket: net.Socket, name: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const onData = (data: Uint8Array) => {
      cleanUp();
      // A server responds with exactly one byte before the handshake. More
      // bytes would be unencrypted data injected ahead of TLS.
      if (data.length === 1 && data[0] === SSL_ACCEPTED) {
        resolve(true);
      } else if (data.length === 1 && data[0] === SSL_REFUSED) {
        resolve(false);
      } else {
        reject(new ConnectError(`${name}: unexpected response to the TLS request`, { tls: true }));
      }
    };
    const onError = (error: Error) => {
      cleanUp();
      reject(new ConnectError(`${name}: ${describeSocketError(error)}`, { cause: error }));
    };
    const onClose = () => {
      cleanUp();
      reject(new ConnectError(`${name}: connection closed by the server during the TLS request`));
    };
    const cleanUp = () => {
      socket.off("data", onData);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
    socket.on("data", onData);
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.write(SSL_REQUEST);
  });
}

function startTls(
  socket: net.Socket,
  host: DatabaseHost,
  mode: SslMode,
  rootCert: string | undefined,
): tls.TLSSocket {
  const hostname = host.kind === "tcp" ? host.hostname : "localhost";
  const options: tls.ConnectionOptions = {
    socket,
    // SNI takes names only, never IP addresses.
    servername: host.kind === "tcp" && net.isIP(hostname) === 0 ? hostname : undefined,
    rejectUnauthorized: mode === "verify-ca" || mode === "verify-full",
  };
  if (rootCert !== undefined) options.ca = [rootCert];
  if (mode === "verify-ca") {
    options.checkServerIdentity = () => undefined;
  } else if (mode === "verify-full") {
    options.checkServerIdentity = (_servername, certificate) =>
      tls.checkServerIdentity(hostname, certificate);
  }
  return tls.connect(options);
}

function tlsHint(error: Error & { code?: string }, mode: SslMode | undefined): string {
  const code = error.code ?? "";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return ` (sslmode is "${mode}": the certificate must name the host as written in database.host)`;
  }
  if (/CERT|SELF_SIGNED|ISSUER|LEAF|VERIFY/.test(code)) {
    return ` (sslmode is "${mode}": set database.sslrootcert to the CA that signed the server certificate)`;
  }
  return "";
}

/** Returns a message for a socket error without the stack, such as "connection refused". */
export function describeSocketError(error: Error & { code?: string }): string {
  switch (error.code) {
    case "ECONNREFUSED":
      return "connection refused (is PostgreSQL running and listening there?)";
    case "ENOENT":
      return "no socket file (is PostgreSQL running, and is database.host its socket directory?)";
    case "EACCES":
      return "permission denied on the socket file";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "host name not found";
    case "ECONNRESET":
      return "connection reset";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "host unreachable";
    default:
      return error.message;
  }
}
