/** The program version, shown by --version and in the start-up log line. */
export const VERSION = "0.1.0";
