/**
 * A small INI reader with the rules of Python's configparser defaults, so a
 * database password may contain `#`, `;`, `=` and `:`:
 *
 * - `[section]` starts a section, `key = value` sets a key in it.
 * - Only whole lines starting with `#` or `;` are comments.
 * - Section and key names are case-insensitive, values are trimmed.
 * - A value wrapped in matching double or single quotes loses the quotes,
 *   which keeps leading or trailing spaces.
 *
 * @module
 */

/** One `key = value` line. */
export interface IniEntry {
  value: string;
  line: number;
}

/** Sections by lowercase name, each with its entries by lowercase key. */
export type IniDocument = Map<string, Map<string, IniEntry>>;

/** A syntax error in an INI file, with the 1-based line number. */
export class IniSyntaxError extends SyntaxError {
  readonly line: number;

  constructor(message: string, line: number) {
    super(message);
    this.name = "IniSyntaxError";
    this.line = line;
  }
}

/** Parses INI text. Throws {@linkcode IniSyntaxError} on the first bad line. */
export function parseIni(text: string): IniDocument {
  const document: IniDocument = new Map();
  let section: Map<string, IniEntry> | undefined;
  let sectionName = "";
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);

  for (let index = 0; index < lines.length; index++) {
    const lineNumber = index + 1;
    const line = lines[index].trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;

    if (line.startsWith("[")) {
      if (!line.endsWith("]")) {
        throw new IniSyntaxError(`section header must end with "]"`, lineNumber);
      }
      sectionName = line.slice(1, -1).trim().toLowerCase();
      if (sectionName === "") throw new IniSyntaxError("section name is empty", lineNumber);
      section = document.get(sectionName);
      if (section === undefined) {
        section = new Map();
        document.set(sectionName, section);
      }
      continue;
    }

    const equals = line.indexOf("=");
    if (equals === -1) {
      throw new IniSyntaxError(`expected "key = value" or "[section]"`, lineNumber);
    }
    const key = line.slice(0, equals).trim().toLowerCase();
    if (key === "") throw new IniSyntaxError(`key name before "=" is empty`, lineNumber);
    if (section === undefined) {
      throw new IniSyntaxError(`key "${key}" comes before any [section] header`, lineNumber);
    }
    const previous = section.get(key);
    if (previous !== undefined) {
      throw new IniSyntaxError(
        `key "${sectionName}.${key}" is set twice (first on line ${previous.line})`,
        lineNumber,
      );
    }
    section.set(key, { value: unquote(line.slice(equals + 1).trim()), line: lineNumber });
  }
  return document;
}

function unquote(value: string): string {
  if (value.length >= 2) {
    const first = value[0];
    if ((first === '"' || first === "'") && value.endsWith(first)) return value.slice(1, -1);
  }
  return value;
}
