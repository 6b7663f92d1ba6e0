#include "services/schemas.h"

#include "services/message_center/message_center.h"
#include "services/push/push_service.h"

namespace services {

void add_schemas(hydra::ConfigSchema& schema) {
    schema.add("services.push", push::config_schema());
    schema.add("services.message_center", message_center::config_schema());
}

hydra::ConfigSchema full_schema() {
    hydra::ConfigSchema schema = hydra::ConfigSchema::builtin();
    add_schemas(schema);
    return schema;
}

}  // namespace services
