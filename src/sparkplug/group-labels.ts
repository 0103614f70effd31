/** The label of the groups past the bound, and of refusals that name no group. */
export const OTHER_GROUPS = "_other";
export const NO_GROUP = "_none";

/**
 * The `group` label values of the Sparkplug metrics: the first `limit` groups that accepted
 * births name are their own label, later ones share `_other`, so that clients naming groups
 * cannot grow the series without bound. A refused publish only reuses a label.
 */
export class GroupLabels {
  private readonly seen = new Set<string>();

  constructor(private readonly limit: number) {}

  /** The label of a group an accepted birth names, admitting it while there is room. */
  admit(group: string): string {
    if (this.seen.has(group)) return group;
    if (this.seen.size >= this.limit) return OTHER_GROUPS;
    this.seen.add(group);
    return group;
  }

  /** The label of a group as it stands, admitting none. */
  labelOf(group: string | undefined): string {
    if (group === undefined) return NO_GROUP;
    return this.seen.has(group) ? group : OTHER_GROUPS;
  }
}
