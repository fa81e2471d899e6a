/**
 * A TCP proxy on loopback that tests put between a client and a server to inject network
 * faults: a server that accepts connections but never responds, and connections that die
 * without notice.
 *
 * @module
 */

/** Loopback address that the proxy listens on by default. */
const LOOPBACK_HOSTNAME = "127.0.0.1";

/** Loopback addresses a proxy may listen on. */
export type LoopbackAddress = "127.0.0.1" | "::1";

/** Size in bytes of the buffer for each direction of each connection. */
const BUFFER_SIZE = 64 * 1024;

/**
 * How the proxy handles new connections. "forward" connects each one to the target.
 * "blackhole" accepts it, reads and discards what the client sends, and never responds.
 */
export type ProxyMode = "forward" | "blackhole";

/** Address of the server that the proxy forwards to. */
export interface ProxyTarget {
  hostname: string;
  port: number;
}

/** One accepted client connection and, once connected, its connection to the target. */
interface ProxiedConnection {
  client: Deno.TcpConn;
  server: Deno.TcpConn | null;
  /** If true, the next bytes from the client close both sockets instead of being forwarded. */
  breakOnNextWrite: boolean;
  /** If true, bytes in both directions are read and dropped, and the sockets stay open. */
  stalled: boolean;
}

/**
 * A loopback TCP proxy that forwards each accepted connection to one target.
 *
 * When either side of a connection closes, the proxy closes the other side as well, so a
 * half-closed connection is not kept open.
 */
export class TcpProxy implements AsyncDisposable {
  /** Loopback address that the proxy listens on. */
  readonly hostname: LoopbackAddress;

  /** TCP port that the proxy listens on. */
  readonly port: number;

  readonly #target: ProxyTarget;
  readonly #listener: Deno.TcpListener;
  readonly #connections = new Set<ProxiedConnection>();
  readonly #connectionTasks = new Set<Promise<void>>();
  readonly #acceptTask: Promise<void>;
  #mode: ProxyMode = "forward";
  #connectionCount = 0;
  #closing = false;
  #closePromise: Promise<void> | null = null;
  #unexpectedError: unknown = null;

  private constructor(listener: Deno.TcpListener, target: ProxyTarget, hostname: LoopbackAddress) {
    this.#listener = listener;
    this.hostname = hostname;
    this.#target = { hostname: target.hostname, port: target.port };
    this.port = listener.addr.port;
    this.#acceptTask = this.#acceptConnections();
  }

  /**
   * Starts a proxy in "forward" mode on a free port of 127.0.0.1, or of ::1
   * when `listen` is "::1".
   */
  static start(
    target: ProxyTarget,
    options: { listen?: LoopbackAddress } = {},
  ): Promise<TcpProxy> {
    const hostname = options.listen ?? LOOPBACK_HOSTNAME;
    // The executor turns an exception from Deno.listen into a rejected promise.
    return new Promise((resolve) => {
      const listener = Deno.listen({ hostname, port: 0 });
      resolve(new TcpProxy(listener, target, hostname));
    });
  }

  /** Number of client connections accepted so far, in any mode. */
  get connectionCount(): number {
    return this.#connectionCount;
  }

  /**
   * Sets how the proxy handles connections accepted from now on. Open connections keep the
   * mode they were accepted in, so a blackholed connection stays silent after a switch back to
   * "forward".
   */
  setMode(mode: ProxyMode): void {
    this.#mode = mode;
  }

  /**
   * Makes every connection that is open now close both of its sockets as soon as the client
   * sends its next bytes, which are dropped. This looks to the client like a connection that
   * died silently, for example after a failover. Connections accepted later are not affected.
   */
  breakOnNextWrite(): void {
    for (const connection of this.#connections) {
      connection.breakOnNextWrite = true;
    }
  }

  /**
   * Makes every connection that is open now drop the bytes of both directions while its
   * sockets stay open, like a server or network that stopped responding in the middle of a
   * session. Connections accepted later are not affected.
   */
  stallOpenConnections(): void {
    for (const connection of this.#connections) {
      connection.stalled = true;
    }
  }

  /**
   * Stops listening, closes every socket and waits until all connection tasks have ended.
   * Throws the first unexpected I/O error that a connection task caught, if any. Later calls
   * return the result of the first one.
   */
  close(): Promise<void> {
    this.#closePromise ??= this.#closeOnce();
    return this.#closePromise;
  }

  /** Calls `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #closeOnce(): Promise<void> {
    this.#closing = true;
    closeQuietly(this.#listener);
    await this.#acceptTask;
    for (const connection of this.#connections) {
      closeConnection(connection);
    }
    await Promise.all(this.#connectionTasks);
    if (this.#unexpectedError !== null) {
      throw this.#unexpectedError;
    }
  }

  async #acceptConnections(): Promise<void> {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch (error) {
        // close() closes the listener, which makes accept() throw BadResource.
        if (!(this.#closing && error instanceof Deno.errors.BadResource)) {
          this.#recordUnexpectedError(error);
        }
        return;
      }

      this.#connectionCount += 1;
      const task: Promise<void> = this.#handleConnection(client)
        .catch((error) => this.#recordUnexpectedError(error))
        .finally(() => this.#connectionTasks.delete(task));
      this.#connectionTasks.add(task);
    }
  }

  async #handleConnection(client: Deno.TcpConn): Promise<void> {
    const connection: ProxiedConnection = {
      client,
      server: null,
      breakOnNextWrite: false,
      stalled: false,
    };
    this.#connections.add(connection);
    try {
      if (this.#closing) {
        return;
      }
      if (this.#mode === "blackhole") {
        await this.#pump(connection, client, null);
        return;
      }

      try {
        connection.server = await Deno.connect(this.#target);
      } catch {
        // The target is down or refuses connections, which the client sees as a closed
        // connection. That is a test scenario, not a proxy failure.
        return;
      }
      // close() may have run while Deno.connect was pending. The finally block closes the new
      // socket as well.
      if (this.#closing) {
        return;
      }
      // PostgreSQL messages are small, so Nagle's algorithm would only delay them.
      client.setNoDelay(true);
      connection.server.setNoDelay(true);
      await Promise.all([
        this.#pump(connection, client, connection.server),
        this.#pump(connection, connection.server, client),
      ]);
    } finally {
      closeConnection(connection);
      this.#connections.delete(connection);
    }
  }

  /**
   * Copies bytes from `source` to `destination` until either side closes, then closes both
   * sockets of the connection. With `destination` null, the bytes are discarded.
   */
  async #pump(
    connection: ProxiedConnection,
    source: Deno.TcpConn,
    destination: Deno.TcpConn | null,
  ): Promise<void> {
    const buffer = new Uint8Array(BUFFER_SIZE);
    try {
      while (true) {
        const byteCount = await source.read(buffer);
        if (byteCount === null) {
          return;
        }
        if (source === connection.client && connection.breakOnNextWrite) {
          return;
        }
        if (destination !== null && !connection.stalled) {
          await writeAll(destination, buffer.subarray(0, byteCount));
        }
      }
    } catch (error) {
      if (!isClosedConnectionError(error)) {
        this.#recordUnexpectedError(error);
      }
    } finally {
      closeConnection(connection);
    }
  }

  #recordUnexpectedError(error: unknown): void {
    this.#unexpectedError ??= error;
  }
}

/** Closes both sockets of a connection, skipping those already closed. */
function closeConnection(connection: ProxiedConnection): void {
  closeQuietly(connection.client);
  if (connection.server !== null) {
    closeQuietly(connection.server);
  }
}

/** Closes a socket or listener, ignoring the BadResource error of one already closed. */
function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) {
      throw error;
    }
  }
}

/**
 * Returns whether an I/O error means that a socket was closed, by this proxy (BadResource,
 * Interrupted) or by the peer (reset, aborted, broken pipe, not connected).
 */
function isClosedConnectionError(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.NotConnected;
}

async function writeAll(destination: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await destination.write(bytes.subarray(offset));
  }
}
