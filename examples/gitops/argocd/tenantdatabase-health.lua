-- Argo CD health check for tenantdb.io/TenantDatabase, for argocd-cm's
-- resource.customizations.health.tenantdb.io_TenantDatabase (see
-- argocd-cm-patch.yaml). Healthy only when Ready is True for the current
-- generation; Progressing while the operator has not caught up or is
-- reconciling; Degraded when it stalled or the tenant is degraded.
local hs = { status = "Progressing", message = "Waiting for the operator" }

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  return hs
end
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "The operator has not yet seen generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
if status.phase == "Degraded" or status.phase == "Failed" then
  local healthy = condition(status, "Healthy")
  local ready = condition(status, "Ready")
  hs.status = "Degraded"
  if healthy ~= nil and healthy.status == "False" then
    hs.message = healthy.message
  elseif ready ~= nil then
    hs.message = ready.message
  else
    hs.message = status.phase
  end
  return hs
end
local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message or "Reconciling"
  return hs
end
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  if ready.observedGeneration == nil or generation == nil or ready.observedGeneration >= generation then
    hs.status = "Healthy"
    hs.message = ready.message
    return hs
  end
end
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
return hs
