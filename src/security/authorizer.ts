/** Who asks, as ACLs see it: `%c` and `%u`. An undefined username is an anonymous client. */
export interface AclSubject {
  clientId: string;
  username: string | undefined;
  /** A registered device's groups select the ACL's `group` sections. */
  device?: { groups: readonly string[] } | undefined;
  /** The verified client certificate's CN, where a rule reads it (Sparkplug identity binding). */
  certificateCn?: string | undefined;
}

/** Topic authorization, deny by default. Satisfied by Acl (an ACL file) and OpenAuthorizer. */
export interface Authorizer {
  canPublish(subject: AclSubject, topic: string): boolean;
  /** Asked before every delivery, retained and queued messages included: keep it cheap. */
  canRead(subject: AclSubject, topic: string): boolean;
  canSubscribe(subject: AclSubject, filter: string): boolean;
}

const isSys = (topic: string): boolean => topic === "$SYS" || topic.startsWith("$SYS/");

/**
 * Without an ACL file, Mosquitto's behaviour: every authenticated client may publish and
 * subscribe anywhere except `$SYS`.
 */
export class OpenAuthorizer implements Authorizer {
  canPublish(_subject: AclSubject, topic: string): boolean {
    return !isSys(topic);
  }

  canRead(_subject: AclSubject, topic: string): boolean {
    return !isSys(topic);
  }

  canSubscribe(_subject: AclSubject, filter: string): boolean {
    return !isSys(filter);
  }
}
