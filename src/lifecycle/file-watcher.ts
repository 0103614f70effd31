import { type FSWatcher, watch } from "node:fs";
import { basename, dirname } from "node:path";

/** Changes closer together than this are one reload (editors write files in several steps). */
const DEBOUNCE_MS = 250;

/**
 * Calls `onChange` once a burst of changes to any of `files` settles. Watches the folders, not
 * the files: editors and Kubernetes ConfigMap updates replace files (rename, symlink swap),
 * which a watch on the old file would miss.
 */
export class FileWatcher {
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(files: readonly string[], onChange: () => void) {
    const byFolder = new Map<string, Set<string>>();
    for (const file of files) {
      const names = byFolder.get(dirname(file)) ?? new Set<string>();
      names.add(basename(file));
      byFolder.set(dirname(file), names);
    }
    for (const [folder, names] of byFolder) {
      const watcher = watch(folder, (_event, name) => {
        // `..data` is the symlink Kubernetes swaps when a mounted ConfigMap or Secret changes.
        if (name !== null && !names.has(name) && name !== "..data") return;
        clearTimeout(this.timer);
        this.timer = setTimeout(onChange, DEBOUNCE_MS);
      });
      watcher.on("error", () => watcher.close());
      this.watchers.push(watcher);
    }
  }

  close(): void {
    clearTimeout(this.timer);
    for (const watcher of this.watchers) watcher.close();
  }
}
