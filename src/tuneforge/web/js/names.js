// Names the server sends as keys (metrics, events, chat roles), said in the user's language where the
// message files know them; an unknown key is shown as it is (it is the name a script or spec uses).
import { has, t } from './i18n.js';

const named = (prefix) => (key) => (has(`${prefix}.${key}`) ? t(`${prefix}.${key}`) : key);

/** eval_loss → 验证损失 */
export const metricName = named('metric');
/** checkpoint_saved → 已保存检查点 */
export const eventName = named('event');
/** user → 用户 */
export const roleName = named('role');
